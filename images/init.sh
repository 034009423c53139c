#!/bin/busybox sh
# PID 1 of every harness guest. Mounts the pseudo file systems, loads the modules the image
# builder listed (in modules.dep order), brings up the network and dropbear for SSH, then
# becomes busybox init, which runs the control agent on the virtio console (/etc/inittab).
# Kernel messages stay on the kernel console (the first serial port).
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mkdir -p /dev/pts /tmp /run
/bin/busybox mount -t devpts devpts /dev/pts
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root

log() { echo "harness-init: $*" > /dev/kmsg; }

while read -r mod; do
  insmod "$mod" || log "insmod $mod failed"
done < /etc/harness/modules

ip link set lo up
if ip link set eth0 up 2> /dev/null; then
  # QEMU user networking (slirp): guest 10.0.2.15, gateway 10.0.2.2.
  ip addr add 10.0.2.15/24 dev eth0
  ip route add default via 10.0.2.2
  key=$(sed -n 's/.*harness\.sshkey=\([^ ]*\).*/\1/p' /proc/cmdline)
  if [ -n "$key" ]; then
    mkdir -p /root/.ssh
    echo "$key" | sed 's/:/ /' > /root/.ssh/authorized_keys
    chmod 700 /root/.ssh; chmod 600 /root/.ssh/authorized_keys
    dropbear -s -r /etc/dropbear/dropbear_ed25519_host_key -p 22 -P /run/dropbear.pid
  fi
else
  log "no eth0: SSH is unavailable"
fi

# Wait for the control console, then hand PID 1 to busybox init, which starts the agent on it
# (/etc/inittab). Started that way the agent is a session leader with hvc0 as its controlling
# tty and default signal dispositions: an agent started as "cmd &" from this non-interactive
# shell would inherit SIGINT ignored, and could then never trap the harness's ^C.
n=0
while [ ! -c /dev/hvc0 ] && [ $n -lt 2000 ]; do usleep 5000; n=$((n + 1)); done
[ -c /dev/hvc0 ] || log "no /dev/hvc0: the control channel is missing"
exec /bin/busybox init
