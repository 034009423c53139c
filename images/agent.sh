# The control agent, run by init on the virtio console with it as controlling tty.
# One command per line: "<token> <script with \0ooo octal escapes>" (harness/channels/framing.py);
# printf %b, a builtin, decodes it without starting a process. Each reply is framed with \036 (ASCII
# RS) markers that carry the token, so neither an echo nor the command's output can forge them:
#   \036B<token>\036 <stdout> \036E<token>\036 <stderr> \036X<token> <exit code>\036
# The tty passes output bytes untouched (-opost), never echoes, and turns ^C into SIGINT (isig):
# the harness interrupts a command that overran its deadline that way.
# QEMU drops what it cannot write to the console's socket at once (a virtconsole is never
# throttled: hw/char/virtio-console.c, flush_buf), so a command's output goes to a file first
# and is sent in chunks of 64 KiB, far below the socket's buffer: after each full chunk,
# \036W<token>\036 asks the harness to say (a newline) that it has read everything so far.
stty -echo -icanon -opost -icrnl -ixon -iexten isig min 1 time 0
t=${HARNESS_TMP:-/tmp}  # where the agent keeps the current script and its output
chunk=65536
# send FILE TOKEN: the file, a chunk at a time (dd: one process per chunk; its own report,
# read back with the builtin read, says whether the chunk was full and another may follow),
# with a wait for the harness after every full chunk.
send() {
  [ -s "$1" ] || return 0
  i=0
  while :; do
    dd if="$1" bs=$chunk skip=$i count=1 2> "$t/.dd"
    read -r rec < "$t/.dd"
    case "$rec" in 1+0*) ;; *) return 0 ;; esac
    i=$((i + 1))
    printf '\036W%s\036' "$2"
    read -r ack
  done
}
trap 'intr=1' INT
set -m
printf '\036HELLO\036\n'
while :; do
  read -r token script
  st=$?
  [ $st -gt 128 ] && continue  # a late ^C interrupted read itself: wait for the next line
  [ $st -ne 0 ] && break
  [ -n "$token" ] || continue
  intr=0
  printf '%b' "$script" > "$t/.cmd"
  printf '\036B%s\036' "$token"
  # A subshell (a fork, no exec) in its own process group (set -m): on ^C the agent's trap
  # interrupts wait and the whole group is killed.
  ( . "$t/.cmd" ) < /dev/null > "$t/.out" 2> "$t/.err" &
  pid=$!
  wait $pid
  rc=$?
  [ $intr = 1 ] && kill -KILL -$pid 2> /dev/null
  send "$t/.out" "$token"
  printf '\036E%s\036' "$token"
  send "$t/.err" "$token"
  printf '\036X%s %d\036' "$token" "$rc"
done
