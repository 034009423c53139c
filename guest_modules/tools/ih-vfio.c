// SPDX-License-Identifier: GPL-2.0
/*
 * ih-vfio: a VFIO user in the guest's user space, for scenarios (issue 13).
 *
 * It is long-lived: `ih-vfio serve DIR` makes the FIFOs DIR/cmd and DIR/reply, then reads one
 * command per line from cmd and writes one result line per command to reply, keeping every
 * fd it opened between commands (a user that holds a group is a state the kernel side must be
 * tested against). `ih-vfio CMD...` runs commands once, in one process, for tests by hand.
 *
 * A result line is "<op> <rc> [key=value ...]": rc is 0 or -errno of the call that failed,
 * as ih_attach's result lines; guard=1 marks what the helper itself refused: a command on an
 * fd it does not hold, a second container or device fd, closing a group with devices open or
 * a container with groups in it (the kernel would keep those alive behind its back).
 *
 * Group and container (include/uapi/linux/vfio.h; Documentation/driver-api/vfio.rst):
 *   container                 open /dev/vfio/vfio, check VFIO_GET_API_VERSION and type1v2
 *   group G                   open /dev/vfio/G                       -> viable=0|1
 *   status G                  VFIO_GROUP_GET_STATUS                  -> viable=0|1 container=0|1
 *   set_container G           VFIO_GROUP_SET_CONTAINER
 *   unset_container G         VFIO_GROUP_UNSET_CONTAINER
 *   set_iommu                 VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)
 *   map IOVA SIZE             VFIO_IOMMU_MAP_DMA of a fresh anonymous buffer, read+write
 *   unmap IOVA SIZE           VFIO_IOMMU_UNMAP_DMA                   -> unmapped=N
 *   device G BDF              VFIO_GROUP_GET_DEVICE_FD, then BAR0 mapped (an edu's registers)
 *   dma BDF IOVA LEN          edu's DMA engine: RAM(IOVA) -> device buffer -> RAM(IOVA+LEN),
 *                             through the mapping at IOVA; compares    -> verified=0|1
 *   dma_to BDF IOVA LEN       one transfer device buffer -> RAM(IOVA), not waited on for
 *                             bytes (a fault through an unmapped IOVA) -> done=0|1
 *   close_device BDF | close_group G | close_container
 *   unbind BDF                the device's address written to vfio-pci's unbind file by a
 *                             child process: the kernel holds the write until user space
 *                             closes the device (vfio_unregister_group_dev), so an unbind of an
 *                             open device stays pending (done=0) and completes when
 *                             close_device or iommufd_unbind closes it (unbound=1 there)
 *
 * iommufd and the device's own character device (include/uapi/linux/iommufd.h, the cdev part
 * of include/uapi/linux/vfio.h; Documentation/userspace-api/iommufd.rst); NAME labels an
 * IOAS or HWPT of the helper's, a device is its PCI address:
 *   iommufd_open              open /dev/iommu
 *   iommufd_bind BDF          open /dev/vfio/devices/vfioN (from sysfs), VFIO_DEVICE_BIND_IOMMUFD,
 *                             then BAR0 mapped as for `device`          -> devid=N
 *   iommufd_ioas NAME         IOMMU_IOAS_ALLOC                          -> id=N
 *   iommufd_map NAME IOVA SIZE    IOMMU_IOAS_MAP of a fresh buffer at a fixed IOVA
 *   iommufd_unmap NAME IOVA SIZE  IOMMU_IOAS_UNMAP                      -> unmapped=N
 *   iommufd_hwpt NAME BDF IOAS    IOMMU_HWPT_ALLOC: a domain of its own for the IOAS -> id=N
 *   iommufd_attach BDF PT     VFIO_DEVICE_ATTACH_IOMMUFD_PT (PT: an IOAS or HWPT name); on an
 *                             attached device the kernel replaces the domain  -> hwpt=N
 *   iommufd_detach BDF        VFIO_DEVICE_DETACH_IOMMUFD_PT
 *   iommufd_dma BDF IOVA LEN  as `dma`, through the mappings of the IOAS the device is on
 *   iommufd_unbind BDF        close the device fd (the kernel detaches and unbinds it)
 *   iommufd_destroy NAME      IOMMU_DESTROY
 *   iommufd_close             close /dev/iommu
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "../edu.h"
#include "iommufd-uapi.h"

#define MAX_SLOTS 16

struct group { int id; int fd; };
/* A device's DMA space: CONTAINER for one opened through its group, else the id of the IOAS
 * it is attached to (NO_SPACE: a bound device not attached). */
#define CONTAINER (-1)
#define NO_SPACE 0
struct device { char bdf[32]; int group; int fd; volatile uint8_t *bar0; size_t bar0_size;
		int space; uint32_t devid; };
struct mapping { uint64_t iova; uint64_t size; uint8_t *buf; int space; };
/* An IOAS or HWPT the helper allocated: its label, id, and (for a HWPT) the IOAS under it. */
struct object { char name[16]; uint32_t id; uint32_t ioas; };

static int container = -1;
static struct group groups[MAX_SLOTS];
static struct device devices[MAX_SLOTS];
static struct mapping mappings[MAX_SLOTS];
static int iommufd = -1;
static struct object objects[MAX_SLOTS];
/* Unbinds in progress: the child blocked in the write, by device. */
struct unbind { char bdf[32]; pid_t pid; };
static struct unbind unbinds[MAX_SLOTS];
static FILE *out;

static void result(const char *op, int rc, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void run_iommufd(const char *op, int n, const char *a, const char *b, const char *c);


static void result(const char *op, int rc, const char *fmt, ...)
{
	va_list ap;

	fprintf(out, "%s %d", op, rc);
	if (fmt && *fmt) {
		fputc(' ', out);
		va_start(ap, fmt);
		vfprintf(out, fmt, ap);
		va_end(ap);
	}
	fputc('\n', out);
	fflush(out);
}

static struct group *find_group(int id)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (groups[i].fd > 0 && groups[i].id == id)
			return &groups[i];
	return NULL;
}

static struct device *find_device(const char *bdf)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (devices[i].fd > 0 && !strcmp(devices[i].bdf, bdf))
			return &devices[i];
	return NULL;
}

static struct mapping *find_mapping(int space, uint64_t iova)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (mappings[i].buf && mappings[i].space == space && mappings[i].iova <= iova &&
		    iova < mappings[i].iova + mappings[i].size)
			return &mappings[i];
	return NULL;
}

static void do_container(void)
{
	int fd = open("/dev/vfio/vfio", O_RDWR | O_CLOEXEC);

	if (container >= 0) {
		if (fd >= 0)
			close(fd);
		result("container", -EBUSY, "guard=1 why=open");
		return;
	}
	if (fd < 0) {
		result("container", -errno, NULL);
		return;
	}
	if (ioctl(fd, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
		close(fd);
		result("container", -EINVAL, "why=api_version");
		return;
	}
	if (ioctl(fd, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) <= 0) {
		close(fd);
		result("container", -EINVAL, "why=no_type1v2");
		return;
	}
	container = fd;
	result("container", 0, NULL);
}

static void do_group(int id)
{
	char path[64];
	struct vfio_group_status status = { .argsz = sizeof(status) };
	int fd, slot = -1;

	for (int i = 0; i < MAX_SLOTS && slot < 0; i++)
		if (groups[i].fd <= 0)
			slot = i;
	snprintf(path, sizeof(path), "/dev/vfio/%d", id);
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0 || slot < 0) {
		result("group", fd < 0 ? -errno : -ENOSPC, "group=%d", id);
		return;
	}
	if (ioctl(fd, VFIO_GROUP_GET_STATUS, &status)) {
		int rc = -errno;

		close(fd);
		result("group", rc, "group=%d", id);
		return;
	}
	groups[slot].id = id;
	groups[slot].fd = fd;
	result("group", 0, "group=%d viable=%d", id,
	       !!(status.flags & VFIO_GROUP_FLAGS_VIABLE));
}

static void group_ioctl(const char *op, int id, unsigned long request, void *arg)
{
	struct group *g = find_group(id);

	if (!g) {
		result(op, -EBADF, "group=%d guard=1 why=not_open", id);
		return;
	}
	result(op, ioctl(g->fd, request, arg) ? -errno : 0, "group=%d", id);
}

static int group_in_container(struct group *g)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };

	return !ioctl(g->fd, VFIO_GROUP_GET_STATUS, &status) &&
	       (status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET);
}

static void do_status(int id)
{
	struct vfio_group_status status = { .argsz = sizeof(status) };
	struct group *g = find_group(id);

	if (!g) {
		result("status", -EBADF, "group=%d guard=1 why=not_open", id);
		return;
	}
	if (ioctl(g->fd, VFIO_GROUP_GET_STATUS, &status)) {
		result("status", -errno, "group=%d", id);
		return;
	}
	result("status", 0, "group=%d viable=%d container=%d", id,
	       !!(status.flags & VFIO_GROUP_FLAGS_VIABLE),
	       !!(status.flags & VFIO_GROUP_FLAGS_CONTAINER_SET));
}

static void forget_mappings(int space)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (mappings[i].buf && mappings[i].space == space) {
			munmap(mappings[i].buf, mappings[i].size);
			memset(&mappings[i], 0, sizeof(mappings[i]));
		}
}

/* The last group out of the container takes its backend and every mapping with it
 * (vfio_group_detach_container): forget ours too. */
static void after_leaving(void)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (groups[i].fd > 0 && group_in_container(&groups[i]))
			return;
	forget_mappings(CONTAINER);
}

static void do_set_iommu(void)
{
	if (container < 0) {
		result("set_iommu", -EBADF, "guard=1 why=no_container");
		return;
	}
	result("set_iommu", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU) ? -errno : 0,
	       NULL);
}

static void do_map(uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof(map) };
	struct mapping *m = NULL;
	uint8_t *buf;

	for (int i = 0; i < MAX_SLOTS && !m; i++)
		if (!mappings[i].buf)
			m = &mappings[i];
	if (!m || container < 0) {
		result("map", m ? -EBADF : -ENOSPC, "guard=1");
		return;
	}
	buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		result("map", -errno, "why=mmap");
		return;
	}
	map.vaddr = (uintptr_t)buf;
	map.iova = iova;
	map.size = size;
	map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &map)) {
		int rc = -errno;

		munmap(buf, size);
		result("map", rc, "iova=0x%llx", (unsigned long long)iova);
		return;
	}
	m->iova = iova;
	m->size = size;
	m->buf = buf;
	m->space = CONTAINER;
	result("map", 0, "iova=0x%llx", (unsigned long long)iova);
}

static void do_unmap(uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap) };

	if (container < 0) {
		result("unmap", -EBADF, "guard=1");
		return;
	}
	unmap.iova = iova;
	unmap.size = size;
	if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap)) {
		result("unmap", -errno, "iova=0x%llx", (unsigned long long)iova);
		return;
	}
	for (int i = 0; i < MAX_SLOTS; i++)  /* every mapping the range covered is gone */
		if (mappings[i].buf && mappings[i].space == CONTAINER && mappings[i].iova >= iova &&
		    mappings[i].iova + mappings[i].size <= iova + size) {
			munmap(mappings[i].buf, mappings[i].size);
			memset(&mappings[i], 0, sizeof(mappings[i]));
		}
	result("unmap", 0, "iova=0x%llx unmapped=%llu", (unsigned long long)iova,
	       (unsigned long long)unmap.size);
}

/* vfio-pci leaves the command register as it was: set memory space and bus master (PCI
 * COMMAND, offset 4, bits 1 and 2), or edu's DMA never reaches memory. */
static int enable_bus_master(int fd)
{
	struct vfio_region_info config = { .argsz = sizeof(config),
					   .index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t command;

	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &config))
		return -1;
	if (pread(fd, &command, sizeof(command), (off_t)config.offset + 4) != sizeof(command))
		return -1;
	command |= 0x6;
	if (pwrite(fd, &command, sizeof(command), (off_t)config.offset + 4) != sizeof(command))
		return -1;
	return 0;
}

/* A device fd the kernel granted: BAR0 mapped and bus mastering on, into slot d; 0, else
 * -errno with *why naming the step that failed (the fd is then closed). */
static int take_device(struct device *d, int fd, const char *bdf, const char **why)
{
	struct vfio_region_info region = { .argsz = sizeof(region),
					   .index = VFIO_PCI_BAR0_REGION_INDEX };
	void *bar = MAP_FAILED;
	int rc;

	*why = "region_info";
	if (ioctl(fd, VFIO_DEVICE_GET_REGION_INFO, &region))
		goto fail;
	*why = "bar0_mmap";
	bar = mmap(NULL, region.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
		   (off_t)region.offset);
	if (bar == MAP_FAILED)
		goto fail;
	*why = "bus_master";
	if (enable_bus_master(fd))
		goto fail;
	snprintf(d->bdf, sizeof(d->bdf), "%s", bdf);
	d->fd = fd;
	d->bar0 = bar;
	d->bar0_size = region.size;
	return 0;
fail:
	rc = -errno;
	if (bar != MAP_FAILED)
		munmap(bar, region.size);
	close(fd);
	return rc;
}

static struct device *free_device(void)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (devices[i].fd <= 0)
			return &devices[i];
	return NULL;
}

static void do_device(int id, const char *bdf)
{
	struct group *g = find_group(id);
	struct device *d = free_device();
	const char *why;
	int fd, rc;

	if (!g || !d || find_device(bdf)) {
		result("device", !g ? -EBADF : !d ? -ENOSPC : -EBUSY, "dev=%s guard=1", bdf);
		return;
	}
	fd = ioctl(g->fd, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (fd < 0) {
		result("device", -errno, "dev=%s", bdf);
		return;
	}
	rc = take_device(d, fd, bdf, &why);
	if (rc) {
		result("device", rc, "dev=%s why=%s", bdf, why);
		return;
	}
	d->group = id;
	d->space = CONTAINER;
	result("device", 0, "dev=%s bar0=%llu", bdf, (unsigned long long)d->bar0_size);
}

static void reg_write(struct device *d, unsigned int off, uint64_t value)
{
	*(volatile uint64_t *)(d->bar0 + off) = value;
}

static uint64_t reg_read(struct device *d, unsigned int off)
{
	return *(volatile uint64_t *)(d->bar0 + off);
}

/* One edu transfer; 0 once the engine is idle again, -ETIMEDOUT after about a second. */
static int edu_transfer(struct device *d, uint64_t src, uint64_t dst, uint64_t len,
			uint64_t cmd)
{
	struct timespec pause = { 0, 1000000 };

	reg_write(d, EDU_DMA_SRC, src);
	reg_write(d, EDU_DMA_DST, dst);
	reg_write(d, EDU_DMA_CNT, len);
	reg_write(d, EDU_DMA_CMD, cmd | EDU_DMA_START);
	for (int i = 0; i < 1000; i++) {
		if (!(reg_read(d, EDU_DMA_CMD) & EDU_DMA_START))
			return 0;
		nanosleep(&pause, NULL);
	}
	return -ETIMEDOUT;
}

static void do_dma(const char *op, const char *bdf, uint64_t iova, uint64_t len)
{
	struct device *d = find_device(bdf);
	struct mapping *m;
	uint8_t *src, *dst;
	int rc;

	/* dma is for a device opened through its group, iommufd_dma for one bound to iommufd */
	if (d && (d->space == CONTAINER) != !strcmp(op, "dma"))
		d = NULL;
	m = d ? find_mapping(d->space, iova) : NULL;
	if (!d || !m || !len || iova + 2 * len > m->iova + m->size || len > 4096) {
		result(op, d ? -EINVAL : -EBADF, "dev=%s guard=1 why=%s", bdf,
		       !d ? "no_device" : !m ? "unmapped" : "too_long");
		return;
	}
	src = m->buf + (iova - m->iova);
	dst = src + len;
	for (uint64_t i = 0; i < len; i++) {
		src[i] = (uint8_t)(i * 7 + 3);
		dst[i] = 0;
	}
	rc = edu_transfer(d, iova, EDU_BUFFER, len, 0);
	if (!rc)
		rc = edu_transfer(d, EDU_BUFFER, iova + len, len, EDU_DMA_TO_RAM);
	if (rc) {
		result(op, rc, "dev=%s", bdf);
		return;
	}
	result(op, 0, "dev=%s verified=%d", bdf, !memcmp(src, dst, len));
}

static void do_dma_to(const char *bdf, uint64_t iova, uint64_t len)
{
	struct device *d = find_device(bdf);
	int rc;

	if (!d || d->space != CONTAINER) {
		result("dma_to", -EBADF, "dev=%s guard=1", bdf);
		return;
	}
	rc = edu_transfer(d, EDU_BUFFER, iova, len, EDU_DMA_TO_RAM);
	result("dma_to", 0, "dev=%s done=%d", bdf, rc == 0);
}

/* Wait up to ms for a child; its exit code (an errno, 0 for success), -1 while it runs. */
static int reap(pid_t pid, int ms)
{
	struct timespec pause = { 0, 10000000 };
	int status;

	for (int i = 0; i <= ms / 10; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : EINTR;
		nanosleep(&pause, NULL);
	}
	return -1;
}

/* The child: a fresh image (exec drops every fd and mapping of the device, which would
 * otherwise keep it open and the unbind waiting on ourselves), then the one write. */
static int unbind_child(const char *bdf)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "/sys/bus/pci/drivers/vfio-pci/unbind");
	fd = open(path, O_WRONLY);
	if (fd < 0 || write(fd, bdf, strlen(bdf)) < 0)
		return errno;
	return 0;
}

static void do_unbind(const char *op, const char *bdf)
{
	char link[128], target[256];
	struct unbind *u = NULL;
	const char *driver;
	ssize_t n;
	pid_t pid;
	int rc;

	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s/driver", bdf);
	n = readlink(link, target, sizeof(target) - 1);
	target[n > 0 ? n : 0] = 0;
	driver = strrchr(target, '/');
	for (int i = 0; i < MAX_SLOTS && !u; i++)
		if (!unbinds[i].pid)
			u = &unbinds[i];
	if (!driver || strcmp(driver + 1, "vfio-pci") || !u) {
		result(op, u ? -ENODEV : -ENOSPC, "dev=%s guard=1 why=not_on_vfio_pci", bdf);
		return;
	}
	pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", "ih-vfio", "unbind-child", bdf, (char *)NULL);
		_exit(ENOEXEC);
	}
	if (pid < 0) {
		result(op, -errno, "dev=%s", bdf);
		return;
	}
	rc = reap(pid, 2000);  /* an unbind nobody holds up is done at once */
	if (rc >= 0) {
		result(op, -rc, "dev=%s done=1", bdf);
		return;
	}
	snprintf(u->bdf, sizeof(u->bdf), "%s", bdf);
	u->pid = pid;
	result(op, 0, "dev=%s done=0", bdf);
}

/* After the device's fd closed: a pending unbind of it completes; 1 when it did. */
static int finish_unbind(const char *bdf)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (unbinds[i].pid && !strcmp(unbinds[i].bdf, bdf)) {
			int rc = reap(unbinds[i].pid, 15000);

			if (rc < 0)
				return 0;  /* still held: the kernel waits for another user */
			memset(&unbinds[i], 0, sizeof(unbinds[i]));
			return rc == 0;
		}
	return 0;
}

/* close_device closes a device opened through its group, iommufd_unbind one bound to iommufd:
 * the helper refuses the other kind (guard). */
static void do_close_device(const char *op, const char *bdf, int cdev)
{
	struct device *d = find_device(bdf);

	if (!d || (d->space == CONTAINER) == cdev) {
		result(op, -EBADF, "dev=%s guard=1", bdf);
		return;
	}
	munmap((void *)d->bar0, d->bar0_size);
	close(d->fd);
	memset(d, 0, sizeof(*d));
	if (finish_unbind(bdf))
		result(op, 0, "dev=%s unbound=1", bdf);
	else
		result(op, 0, "dev=%s", bdf);
}

static void do_close_group(int id)
{
	struct group *g = find_group(id);

	if (!g) {
		result("close_group", -EBADF, "group=%d guard=1", id);
		return;
	}
	for (int i = 0; i < MAX_SLOTS; i++)
		if (devices[i].fd > 0 && devices[i].space == CONTAINER &&
		    devices[i].group == id) {
			result("close_group", -EBUSY, "group=%d guard=1 why=devices_open", id);
			return;
		}
	close(g->fd);
	memset(g, 0, sizeof(*g));
	after_leaving();
	result("close_group", 0, "group=%d", id);
}

static void do_close_container(void)
{
	if (container < 0) {
		result("close_container", -EBADF, "guard=1");
		return;
	}
	for (int i = 0; i < MAX_SLOTS; i++)
		if (groups[i].fd > 0 && group_in_container(&groups[i])) {
			result("close_container", -EBUSY, "guard=1 why=groups_in_it");
			return;
		}
	close(container);
	container = -1;
	forget_mappings(CONTAINER);  /* the mappings went with the container */
	result("close_container", 0, NULL);
}

/* ---------------------------------------------------------------- iommufd */

static struct object *find_object(const char *name)
{
	for (int i = 0; i < MAX_SLOTS; i++)
		if (objects[i].id && !strcmp(objects[i].name, name))
			return &objects[i];
	return NULL;
}

static struct object *new_object(const char *name)
{
	if (find_object(name) || strlen(name) >= sizeof(objects[0].name))
		return NULL;
	for (int i = 0; i < MAX_SLOTS; i++)
		if (!objects[i].id)
			return &objects[i];
	return NULL;
}

/* The device's character device, /dev/vfio/devices/vfioN, named by its sysfs vfio-dev/. */
static int open_cdev(const char *bdf)
{
	char dir[128], path[300];
	struct dirent *entry;
	DIR *d;

	snprintf(dir, sizeof(dir), "/sys/bus/pci/devices/%s/vfio-dev", bdf);
	d = opendir(dir);
	if (!d)
		return -1;
	errno = ENOENT;
	while ((entry = readdir(d)))
		if (!strncmp(entry->d_name, "vfio", 4)) {
			snprintf(path, sizeof(path), "/dev/vfio/devices/%s", entry->d_name);
			closedir(d);
			return open(path, O_RDWR | O_CLOEXEC);
		}
	closedir(d);
	errno = ENOENT;
	return -1;
}

/* The device's IOMMU group number, from sysfs; -1 without one. */
static int group_number(const char *bdf)
{
	char link[128], target[256];
	const char *slash;
	ssize_t n;

	snprintf(link, sizeof(link), "/sys/bus/pci/devices/%s/iommu_group", bdf);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return -1;
	target[n] = 0;
	slash = strrchr(target, '/');
	return atoi(slash ? slash + 1 : target);
}

static void iommufd_bind(const char *op, const char *bdf)
{
	struct ih_vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct device *d = free_device();
	const char *why;
	int fd, rc;

	if (iommufd < 0 || !d || find_device(bdf)) {
		result(op, iommufd < 0 ? -EBADF : !d ? -ENOSPC : -EBUSY, "dev=%s guard=1", bdf);
		return;
	}
	fd = open_cdev(bdf);
	if (fd < 0) {
		result(op, -errno, "dev=%s why=cdev", bdf);
		return;
	}
	bind.iommufd = iommufd;
	if (ioctl(fd, IH_VFIO_DEVICE_BIND_IOMMUFD, &bind)) {
		rc = -errno;
		close(fd);
		result(op, rc, "dev=%s", bdf);
		return;
	}
	rc = take_device(d, fd, bdf, &why);
	if (rc) {
		result(op, rc, "dev=%s why=%s", bdf, why);
		return;
	}
	d->group = group_number(bdf);
	d->space = NO_SPACE;
	d->devid = bind.out_devid;
	result(op, 0, "dev=%s devid=%u", bdf, bind.out_devid);
}

static void iommufd_ioas(const char *op, const char *name)
{
	struct ih_iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct object *o = new_object(name);

	if (iommufd < 0 || !o) {
		result(op, iommufd < 0 ? -EBADF : -EEXIST, "name=%s guard=1", name);
		return;
	}
	if (ioctl(iommufd, IH_IOMMU_IOAS_ALLOC, &alloc)) {
		result(op, -errno, "name=%s", name);
		return;
	}
	snprintf(o->name, sizeof(o->name), "%s", name);
	o->id = alloc.out_ioas_id;
	o->ioas = 0;
	result(op, 0, "name=%s id=%u", name, o->id);
}

static void iommufd_map(const char *op, const char *name, uint64_t iova, uint64_t size)
{
	struct ih_iommu_ioas_map map = { .size = sizeof(map) };
	struct object *o = find_object(name);
	struct mapping *m = NULL;
	uint8_t *buf;

	for (int i = 0; i < MAX_SLOTS && !m; i++)
		if (!mappings[i].buf)
			m = &mappings[i];
	if (iommufd < 0 || !o || o->ioas || !m) {
		result(op, !m ? -ENOSPC : -EBADF, "name=%s guard=1", name);
		return;
	}
	if (!size || (iova | size) % 4096) {  /* the model's ranges are whole pages */
		result(op, -EINVAL, "name=%s guard=1 why=unaligned", name);
		return;
	}
	buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED) {
		result(op, -errno, "why=mmap");
		return;
	}
	map.flags = IH_IOMMU_IOAS_MAP_FIXED_IOVA | IH_IOMMU_IOAS_MAP_WRITEABLE |
		    IH_IOMMU_IOAS_MAP_READABLE;
	map.ioas_id = o->id;
	map.user_va = (uintptr_t)buf;
	map.length = size;
	map.iova = iova;
	if (ioctl(iommufd, IH_IOMMU_IOAS_MAP, &map)) {
		int rc = -errno;

		munmap(buf, size);
		result(op, rc, "name=%s iova=0x%llx", name, (unsigned long long)iova);
		return;
	}
	m->iova = iova;
	m->size = size;
	m->buf = buf;
	m->space = (int)o->id;
	result(op, 0, "name=%s iova=0x%llx", name, (unsigned long long)iova);
}

static void iommufd_unmap(const char *op, const char *name, uint64_t iova, uint64_t size)
{
	struct ih_iommu_ioas_unmap unmap = { .size = sizeof(unmap) };
	struct object *o = find_object(name);

	if (iommufd < 0 || !o || o->ioas) {
		result(op, -EBADF, "name=%s guard=1", name);
		return;
	}
	if (!size || (iova | size) % 4096) {
		result(op, -EINVAL, "name=%s guard=1 why=unaligned", name);
		return;
	}
	unmap.ioas_id = o->id;
	unmap.iova = iova;
	unmap.length = size;
	if (ioctl(iommufd, IH_IOMMU_IOAS_UNMAP, &unmap)) {
		result(op, -errno, "name=%s iova=0x%llx", name, (unsigned long long)iova);
		return;
	}
	for (int i = 0; i < MAX_SLOTS; i++)
		if (mappings[i].buf && mappings[i].space == (int)o->id &&
		    mappings[i].iova >= iova && mappings[i].iova + mappings[i].size <= iova + size) {
			munmap(mappings[i].buf, mappings[i].size);
			memset(&mappings[i], 0, sizeof(mappings[i]));
		}
	result(op, 0, "name=%s unmapped=%llu", name, (unsigned long long)unmap.length);
}

static void iommufd_hwpt(const char *op, const char *name, const char *bdf, const char *ioas)
{
	struct ih_iommu_hwpt_alloc alloc = { .size = sizeof(alloc) };
	struct object *under = find_object(ioas), *o = new_object(name);
	struct device *d = find_device(bdf);

	if (iommufd < 0 || !o || !under || under->ioas || !d || d->space == CONTAINER) {
		result(op, -EBADF, "name=%s guard=1", name);
		return;
	}
	alloc.dev_id = d->devid;
	alloc.pt_id = under->id;
	if (ioctl(iommufd, IH_IOMMU_HWPT_ALLOC, &alloc)) {
		result(op, -errno, "name=%s", name);
		return;
	}
	snprintf(o->name, sizeof(o->name), "%s", name);
	o->id = alloc.out_hwpt_id;
	o->ioas = under->id;
	result(op, 0, "name=%s id=%u", name, o->id);
}

static void iommufd_attach(const char *op, const char *bdf, const char *pt)
{
	struct ih_vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };
	struct object *o = find_object(pt);
	struct device *d = find_device(bdf);

	if (!d || d->space == CONTAINER || !o) {
		result(op, -EBADF, "dev=%s guard=1", bdf);
		return;
	}
	attach.pt_id = o->id;
	if (ioctl(d->fd, IH_VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach)) {
		result(op, -errno, "dev=%s", bdf);
		return;
	}
	if (d->space != NO_SPACE)  /* a replace moves the device's whole group */
		for (int i = 0; i < MAX_SLOTS; i++)
			if (devices[i].fd > 0 && devices[i].space > 0 &&
			    devices[i].group == d->group)
				devices[i].space = o->ioas ? (int)o->ioas : (int)o->id;
	d->space = o->ioas ? (int)o->ioas : (int)o->id;
	result(op, 0, "dev=%s hwpt=%u", bdf, attach.pt_id);
}

static void iommufd_detach(const char *op, const char *bdf)
{
	struct ih_vfio_device_detach_iommufd_pt detach = { .argsz = sizeof(detach) };
	struct device *d = find_device(bdf);

	if (!d || d->space == CONTAINER) {
		result(op, -EBADF, "dev=%s guard=1", bdf);
		return;
	}
	if (ioctl(d->fd, IH_VFIO_DEVICE_DETACH_IOMMUFD_PT, &detach)) {
		result(op, -errno, "dev=%s", bdf);
		return;
	}
	d->space = NO_SPACE;
	result(op, 0, "dev=%s", bdf);
}

static void iommufd_destroy(const char *op, const char *name)
{
	struct ih_iommu_destroy destroy = { .size = sizeof(destroy) };
	struct object *o = find_object(name);

	if (iommufd < 0 || !o) {
		result(op, -EBADF, "name=%s guard=1", name);
		return;
	}
	destroy.id = o->id;
	if (ioctl(iommufd, IH_IOMMU_DESTROY, &destroy)) {
		result(op, -errno, "name=%s", name);
		return;
	}
	if (!o->ioas)
		forget_mappings((int)o->id);  /* an IOAS takes its mappings with it */
	memset(o, 0, sizeof(*o));
	result(op, 0, "name=%s", name);
}

static void iommufd_open(const char *op)
{
	if (iommufd >= 0) {
		result(op, -EBUSY, "guard=1");
		return;
	}
	iommufd = open("/dev/iommu", O_RDWR | O_CLOEXEC);
	result(op, iommufd < 0 ? -errno : 0, NULL);
}

static void iommufd_close(const char *op)
{
	int bound = 0;

	for (int i = 0; i < MAX_SLOTS; i++)
		bound |= devices[i].fd > 0 && devices[i].space != CONTAINER;
	if (iommufd < 0 || bound) {
		result(op, iommufd < 0 ? -EBADF : -EBUSY, "guard=1");
		return;
	}
	close(iommufd);
	iommufd = -1;
	for (int i = 0; i < MAX_SLOTS; i++)  /* every object and mapping went with it */
		if (objects[i].id && !objects[i].ioas)
			forget_mappings((int)objects[i].id);
	memset(objects, 0, sizeof(objects));
	result(op, 0, NULL);
}

/* n counts the words of the line, the command's name included (as in run_line). */
static void run_iommufd(const char *op, int n, const char *a, const char *b, const char *c)
{
	if (!strcmp(op, "iommufd_open") && n >= 1)
		iommufd_open(op);
	else if (!strcmp(op, "iommufd_close") && n >= 1)
		iommufd_close(op);
	else if (!strcmp(op, "iommufd_bind") && n >= 2)
		iommufd_bind(op, a);
	else if (!strcmp(op, "iommufd_unbind") && n >= 2)
		do_close_device(op, a, 1);
	else if (!strcmp(op, "iommufd_ioas") && n >= 2)
		iommufd_ioas(op, a);
	else if (!strcmp(op, "iommufd_map") && n >= 4)
		iommufd_map(op, a, strtoull(b, NULL, 0), strtoull(c, NULL, 0));
	else if (!strcmp(op, "iommufd_unmap") && n >= 4)
		iommufd_unmap(op, a, strtoull(b, NULL, 0), strtoull(c, NULL, 0));
	else if (!strcmp(op, "iommufd_hwpt") && n >= 4)
		iommufd_hwpt(op, a, b, c);
	else if (!strcmp(op, "iommufd_attach") && n >= 3)
		iommufd_attach(op, a, b);
	else if (!strcmp(op, "iommufd_detach") && n >= 2)
		iommufd_detach(op, a);
	else if (!strcmp(op, "iommufd_dma") && n >= 4)
		do_dma(op, a, strtoull(b, NULL, 0), strtoull(c, NULL, 0));
	else if (!strcmp(op, "iommufd_destroy") && n >= 2)
		iommufd_destroy(op, a);
	else
		result(op, -EINVAL, "why=unknown_command");
}

static void run_line(char *line)
{
	char op[32] = "", a[64] = "", b[64] = "", c[64] = "";
	int n = sscanf(line, "%31s %63s %63s %63s", op, a, b, c);

	if (n < 1)
		return;
	if (!strcmp(op, "container") && n >= 1)
		do_container();
	else if (!strcmp(op, "group") && n >= 2)
		do_group(atoi(a));
	else if (!strcmp(op, "status") && n >= 2)
		do_status(atoi(a));
	else if (!strcmp(op, "set_container") && n >= 2)
		group_ioctl(op, atoi(a), VFIO_GROUP_SET_CONTAINER, &container);
	else if (!strcmp(op, "unset_container") && n >= 2) {
		group_ioctl(op, atoi(a), VFIO_GROUP_UNSET_CONTAINER, NULL);
		after_leaving();
	}
	else if (!strcmp(op, "set_iommu") && n >= 1)
		do_set_iommu();
	else if (!strcmp(op, "map") && n >= 3)
		do_map(strtoull(a, NULL, 0), strtoull(b, NULL, 0));
	else if (!strcmp(op, "unmap") && n >= 3)
		do_unmap(strtoull(a, NULL, 0), strtoull(b, NULL, 0));
	else if (!strcmp(op, "device") && n >= 3)
		do_device(atoi(a), b);
	else if (!strcmp(op, "dma") && n >= 4)
		do_dma(op, a, strtoull(b, NULL, 0), strtoull(c, NULL, 0));
	else if (!strcmp(op, "dma_to") && n >= 4)
		do_dma_to(a, strtoull(b, NULL, 0), strtoull(c, NULL, 0));
	else if (!strcmp(op, "close_device") && n >= 2)
		do_close_device(op, a, 0);
	else if (!strncmp(op, "iommufd_", 8))
		run_iommufd(op, n, a, b, c);
	else if (!strcmp(op, "close_group") && n >= 2)
		do_close_group(atoi(a));
	else if (!strcmp(op, "close_container") && n >= 1)
		do_close_container();
	else if (!strcmp(op, "unbind") && n >= 2)
		do_unbind(op, a);
	else
		result(op, -EINVAL, "why=unknown_command");
}

static int serve(const char *dir)
{
	char cmd_path[256], reply_path[256], line[256];
	FILE *in;

	char pid_path[256];
	FILE *pid;

	snprintf(pid_path, sizeof(pid_path), "%s/pid", dir);
	snprintf(cmd_path, sizeof(cmd_path), "%s/cmd", dir);
	snprintf(reply_path, sizeof(reply_path), "%s/reply", dir);
	mkdir(dir, 0700);
	unlink(cmd_path);
	unlink(reply_path);
	if (mkfifo(cmd_path, 0600) || mkfifo(reply_path, 0600)) {
		perror("ih-vfio: mkfifo");
		return 1;
	}
	pid = fopen(pid_path, "w");  /* the steps check that their helper is still alive */
	if (pid) {
		fprintf(pid, "%d\n", (int)getpid());
		fclose(pid);
	}
	/* O_RDWR: the FIFOs never see end-of-file between the steps' writers and readers. */
	in = fdopen(open(cmd_path, O_RDWR), "r");
	out = fdopen(open(reply_path, O_RDWR), "w");
	if (!in || !out) {
		perror("ih-vfio: open");
		return 1;
	}
	while (fgets(line, sizeof(line), in)) {
		if (!strncmp(line, "quit", 4)) {
			result("quit", 0, NULL);
			break;
		}
		run_line(line);
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "unbind-child"))
		return unbind_child(argv[2]);
	out = stdout;
	for (int i = 1; i < argc; i++)
		run_line(argv[i]);
	if (argc < 2) {
		fprintf(stderr, "usage: ih-vfio serve DIR | ih-vfio 'CMD ARGS' ...\n");
		return 2;
	}
	return 0;
}
