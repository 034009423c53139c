// SPDX-License-Identifier: GPL-2.0
/*
 * ih_attach: the harness's hands on the IOMMU attach APIs.
 *
 * Two PCI drivers for QEMU's edu device, bound only through driver_override:
 *   ih_edu        an ordinary DMA-API driver (driver_managed_dma = false)
 *   ih_edu_owned  a driver that manages DMA itself (driver_managed_dma = true), as VFIO
 *
 * Control: /sys/kernel/debug/ih_attach/ctl. Each line written is one operation; each
 * operation appends one result line, read (and consumed) from the same file:
 *   "<op> <rc> [key=value ...]"   rc is the kernel's own 0 or -errno, or the guard's
 * A result with guard=1 means the module refused before calling the kernel, because the call
 * would WARN or corrupt state (freeing an attached domain, detaching what is not attached).
 * Lines may arrive in any number of writes; a batch of hundreds costs one round trip.
 *
 * Operations (DEV is a PCI name such as 0000:00:03.0, H a domain handle [a-z0-9_]{1,15}):
 *   alloc H DEV            allocate an unmanaged (paging) domain for DEV's IOMMU
 *   free H
 *   attach_dev H DEV       iommu_attach_device       detach_dev H DEV    iommu_detach_device
 *   attach_group H DEV     iommu_attach_group        detach_group H DEV  iommu_detach_group
 *   claim_group DEV OWNER  iommu_group_claim_dma_owner   release_group DEV
 *   claim_dev DEV OWNER    iommu_device_claim_dma_owner  release_dev DEV   (where exported)
 *   map H IOVA SIZE        back SIZE bytes with fresh pages, iommu_map at IOVA
 *   unmap H IOVA
 *   dma DEV H IOVA LEN     edu DMA: pattern RAM -> device -> RAM through IOVA, compare bytes
 *   dma_raw DEV IOVA DIR   one edu DMA of 8 bytes to/from IOVA (DIR to_ram|from_ram), no check
 *   state DEV              group=N domain=<H|default|blocked|unmanaged|none> type=T
 *   replace H DEV          iommu_group_replace_domain (where exported, IOMMUFD_INTERNAL)
 *   attach_pasid H DEV P   iommu_attach_device_pasid   detach_pasid H DEV P  (where exported)
 * With no guard, on purpose: the kernel WARNs (and refuses) where the guarded ops would not call:
 *   raw_detach_dev H DEV   iommu_detach_device         raw_detach_group H DEV
 *   raw_release_group DEV  iommu_group_release_dma_owner
 *   after which the module forgets the attachments and claims the kernel no longer has.
 *   members DEV            group=N devices=A,B,... (iommu_group_for_each_dev)
 *   reset                  undo everything (as on unload)
 */
#include <linux/ctype.h>
#include <linux/debugfs.h>
#include <linux/delay.h>
#include <linux/io.h>
#include <linux/iommu.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/slab.h>
#include <linux/string.h>
#include <linux/uaccess.h>

#include "edu.h"

#ifdef IH_HAVE_REPLACE
/* Declared in drivers/iommu/iommu-priv.h (not installed with the headers); exported to the
 * IOMMUFD_INTERNAL namespace. */
int iommu_group_replace_domain(struct iommu_group *group, struct iommu_domain *new_domain);
MODULE_IMPORT_NS(IOMMUFD_INTERNAL);
#endif

/* At most 4095 bytes a transfer: QEMU 7.2's edu_check_range rejects a range that ends exactly
 * at the buffer's end, and its hw_error() then aborts QEMU itself. */
#define EDU_DMA_MAX 4095

#define MAX_LINE 256
#define MAX_RESULTS (256 * 1024)
#define MAX_DOMAINS 64
#define MAX_MAPS 256
#define MAX_OWNERS 16

struct ih_dev {
	struct list_head node;
	struct pci_dev *pdev;
	void __iomem *bar;
	bool owned;			/* bound to ih_edu_owned */
};

struct ih_domain {
	char name[16];
	struct iommu_domain *domain;
	struct ih_domain *next;
};

struct ih_map {
	struct ih_domain *dom;
	unsigned long iova;
	size_t size;
	void *buf;
	struct ih_map *next;
};

/* A group we attached a domain to, or a DMA owner claim we hold. */
struct ih_hold {
	struct iommu_group *group;
	struct pci_dev *pdev;		/* claim_dev claims: the device */
	struct ih_domain *dom;		/* attach_group/attach_dev/pasid: the domain */
	int kind;			/* HOLD_ATTACH_DEV, HOLD_ATTACH_GROUP, HOLD_CLAIM_GROUP, ... */
	u32 pasid;			/* HOLD_PASID */
#ifdef IH_HAVE_PASID
	struct iommu_attach_handle handle;	/* HOLD_PASID: what the group's pasid_array keeps */
#endif
	struct ih_hold *next;
};

enum { HOLD_ATTACH_DEV, HOLD_ATTACH_GROUP, HOLD_CLAIM_GROUP, HOLD_CLAIM_DEV, HOLD_PASID };

static DEFINE_MUTEX(ih_lock);
static LIST_HEAD(ih_devs);
static struct ih_domain *ih_domains;
static struct ih_map *ih_maps;
static struct ih_hold *ih_holds;
static char ih_owner_names[MAX_OWNERS][16];	/* an owner cookie is the address of its slot */
static char *ih_results;
static size_t ih_results_len;
static struct dentry *ih_dir;

/* ------------------------------------------------------------------ results */

static void result(const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!ih_results || ih_results_len >= MAX_RESULTS - MAX_LINE)
		return;
	va_start(ap, fmt);
	n = vscnprintf(ih_results + ih_results_len, MAX_LINE - 1, fmt, ap);
	va_end(ap);
	ih_results_len += n;
	ih_results[ih_results_len++] = '\n';
}

/* Record the result line and leave the (void) operation. */
#define REPLY(...) do { result(__VA_ARGS__); return; } while (0)

/* ------------------------------------------------------------------ lookups */

static bool valid_name(const char *s)
{
	size_t i, n = s ? strlen(s) : 0;

	if (!n || n > 15)
		return false;
	for (i = 0; i < n; i++)
		if (!(islower(s[i]) || isdigit(s[i]) || s[i] == '_'))
			return false;
	return true;
}

static struct ih_domain *find_domain(const char *name)
{
	struct ih_domain *d;

	for (d = ih_domains; d; d = d->next)
		if (!strcmp(d->name, name))
			return d;
	return NULL;
}

static struct pci_dev *find_pci(const char *name)
{
	struct device *dev;

	if (!name || strlen(name) > 16)
		return NULL;
	dev = bus_find_device_by_name(&pci_bus_type, NULL, name);
	return dev ? to_pci_dev(dev) : NULL;	/* a reference the caller puts */
}

static struct ih_dev *find_ih_dev(struct pci_dev *pdev)
{
	struct ih_dev *d;

	list_for_each_entry(d, &ih_devs, node)
		if (d->pdev == pdev)
			return d;
	return NULL;
}

static void *owner_cookie(const char *name)
{
	int i;

	if (!valid_name(name))
		return NULL;
	for (i = 0; i < MAX_OWNERS; i++)
		if (!strcmp(ih_owner_names[i], name))
			return ih_owner_names[i];
	for (i = 0; i < MAX_OWNERS; i++)
		if (!ih_owner_names[i][0]) {
			strscpy(ih_owner_names[i], name, sizeof(ih_owner_names[i]));
			return ih_owner_names[i];
		}
	return NULL;
}

static struct ih_hold *find_hold(int kind, struct iommu_group *group, struct pci_dev *pdev,
				 struct ih_domain *dom)
{
	struct ih_hold *h;

	for (h = ih_holds; h; h = h->next)
		if (h->kind == kind && (!group || h->group == group) && (!pdev || h->pdev == pdev) &&
		    (!dom || h->dom == dom))
			return h;
	return NULL;
}

static void drop_hold(struct ih_hold *gone);

static struct ih_hold *new_hold(int kind, struct iommu_group *group, struct pci_dev *pdev,
			       struct ih_domain *dom)
{
	struct ih_hold *h = kzalloc(sizeof(*h), GFP_KERNEL);

	if (!h)
		return NULL;
	h->kind = kind;
	h->group = group;	/* the reference taken by the caller moves here */
	h->pdev = pdev ? pci_dev_get(pdev) : NULL;
	h->dom = dom;
	h->next = ih_holds;
	ih_holds = h;
	return h;
}

static int add_hold(int kind, struct iommu_group *group, struct pci_dev *pdev,
		    struct ih_domain *dom)
{
	return new_hold(kind, group, pdev, dom) ? 0 : -ENOMEM;
}

static struct ih_hold *find_pasid_hold(struct iommu_group *group, u32 pasid, struct ih_domain *dom)
{
	struct ih_hold *h;

	for (h = ih_holds; h; h = h->next)
		if (h->kind == HOLD_PASID && h->group == group && (pasid == U32_MAX || h->pasid == pasid) &&
		    (!dom || h->dom == dom))
			return h;
	return NULL;
}

/*
 * After a call with no guard, forget what the kernel no longer has: attachments whose domain
 * is not the group's current one, and our claims once nobody counts on the group.
 */
static void resync_group(struct iommu_group *group)
{
	struct ih_hold *h, *next;

	for (h = ih_holds; h; h = next) {
		next = h->next;
		if (h->group != group)
			continue;
		if ((h->kind == HOLD_ATTACH_DEV || h->kind == HOLD_ATTACH_GROUP) &&
		    iommu_get_domain_for_dev(&h->pdev->dev) != h->dom->domain)
			drop_hold(h);
		else if ((h->kind == HOLD_CLAIM_GROUP || h->kind == HOLD_CLAIM_DEV) &&
			 !iommu_group_dma_owner_claimed(group))
			drop_hold(h);
	}
}

static void drop_hold(struct ih_hold *gone)
{
	struct ih_hold **p;

	for (p = &ih_holds; *p; p = &(*p)->next)
		if (*p == gone) {
			*p = gone->next;
			if (gone->group)
				iommu_group_put(gone->group);
			pci_dev_put(gone->pdev);
			kfree(gone);
			return;
		}
}

static bool domain_in_use(struct ih_domain *dom)
{
	struct ih_hold *h;
	struct ih_map *m;

	for (h = ih_holds; h; h = h->next)
		if (h->dom == dom)
			return true;
	for (m = ih_maps; m; m = m->next)
		if (m->dom == dom)
			return true;
	return false;
}

/* ------------------------------------------------------------------ domains */

static struct iommu_domain *alloc_paging(struct pci_dev *pdev)
{
#ifdef IH_HAVE_PAGING_DOMAIN_ALLOC
	return iommu_paging_domain_alloc(&pdev->dev);
#else
	struct iommu_domain *d = iommu_domain_alloc(pdev->dev.bus);

	return d ? d : ERR_PTR(-ENOMEM);
#endif
}

static void op_alloc(const char *h, const char *devname)
{
	struct ih_domain *d;
	struct iommu_domain *domain;
	struct pci_dev *pdev;
	int count = 0;

	if (!valid_name(h) || !devname)
		REPLY("alloc %d guard=1 why=usage", -EINVAL);
	if (find_domain(h))
		REPLY("alloc %d guard=1 why=handle_exists", -EEXIST);
	for (d = ih_domains; d; d = d->next)
		count++;
	if (count >= MAX_DOMAINS)
		REPLY("alloc %d guard=1 why=too_many", -ENOSPC);
	pdev = find_pci(devname);
	if (!pdev)
		REPLY("alloc %d guard=1 why=no_device", -ENODEV);
	domain = alloc_paging(pdev);
	pci_dev_put(pdev);
	if (IS_ERR(domain))
		REPLY("alloc %ld", PTR_ERR(domain));
	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (!d) {
		iommu_domain_free(domain);
		REPLY("alloc %d", -ENOMEM);
	}
	strscpy(d->name, h, sizeof(d->name));
	d->domain = domain;
	d->next = ih_domains;
	ih_domains = d;
	result("alloc 0 type=%u", domain->type);
}

static void unlink_domain(struct ih_domain *gone)
{
	struct ih_domain **p;

	for (p = &ih_domains; *p; p = &(*p)->next)
		if (*p == gone) {
			*p = gone->next;
			return;
		}
}

static void op_free(const char *h)
{
	struct ih_domain *d = h ? find_domain(h) : NULL;

	if (!d)
		REPLY("free %d guard=1 why=no_handle", -ENOENT);
	if (domain_in_use(d))
		REPLY("free %d guard=1 why=attached_or_mapped", -EBUSY);
	unlink_domain(d);
	iommu_domain_free(d->domain);
	kfree(d);
	result("free 0");
}

/* ------------------------------------------------------------------ attach and detach */

/*
 * The device an operation names and a reference on its group (the caller puts both), or
 * NULL after a guard result: no such device, or no group where one is needed.
 */
static struct pci_dev *op_target(const char *op, const char *devname, bool need_group,
				 struct iommu_group **group)
{
	struct pci_dev *pdev = find_pci(devname);

	*group = NULL;
	if (!pdev) {
		result("%s %d guard=1 why=no_device", op, -ENODEV);
		return NULL;
	}
	*group = iommu_group_get(&pdev->dev);
	if (need_group && !*group) {
		pci_dev_put(pdev);
		result("%s %d guard=1 why=no_group", op, -ENODEV);
		return NULL;
	}
	return pdev;
}

/* op_target after the handle check: the prologue of the operations on a domain and a device. */
static struct pci_dev *op_domain_target(const char *op, const char *h, const char *devname,
					bool need_group, struct ih_domain **d,
					struct iommu_group **group)
{
	*d = h ? find_domain(h) : NULL;
	if (!*d) {
		result("%s %d guard=1 why=no_handle", op, -ENOENT);
		return NULL;
	}
	return op_target(op, devname, need_group, group);
}


static void op_attach(bool group_api, const char *h, const char *devname)
{
	const char *op = group_api ? "attach_group" : "attach_dev";
	struct ih_domain *d;
	struct iommu_group *group;
	struct pci_dev *pdev;
	int ret;

	pdev = op_domain_target(op, h, devname, group_api, &d, &group);
	if (!pdev)
		return;
	ret = group_api ? iommu_attach_group(d->domain, group) :
			  iommu_attach_device(d->domain, &pdev->dev);
	if (!ret && group) {
		ret = add_hold(group_api ? HOLD_ATTACH_GROUP : HOLD_ATTACH_DEV, group, pdev, d);
		group = NULL;	/* owned by the hold now */
	}
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
	result("%s %d", op, ret);
}

static void op_detach(bool group_api, const char *h, const char *devname)
{
	const char *op = group_api ? "detach_group" : "detach_dev";
	struct ih_domain *d;
	struct iommu_group *group;
	struct pci_dev *pdev;
	struct ih_hold *hold;

	pdev = op_domain_target(op, h, devname, false, &d, &group);
	if (!pdev)
		return;
	/*
	 * The kernel WARNs when asked to detach a domain that is not the group's current one
	 * (iommu_detach_device) and detaches whatever is attached (iommu_detach_group): only
	 * detach what this module attached and the kernel still has attached.
	 */
	hold = group ? find_hold(group_api ? HOLD_ATTACH_GROUP : HOLD_ATTACH_DEV, group, NULL, d)
		     : NULL;
	if (!hold || iommu_get_domain_for_dev(&pdev->dev) != d->domain) {
		if (group)
			iommu_group_put(group);
		pci_dev_put(pdev);
		REPLY("%s %d guard=1 why=not_attached", op, -ENOENT);
	}
	if (group_api)
		iommu_detach_group(d->domain, group);
	else
		iommu_detach_device(d->domain, &pdev->dev);
	drop_hold(hold);
	iommu_group_put(group);
	pci_dev_put(pdev);
	result("%s 0", op);
}

/* ------------------------------------------------------------------ DMA ownership */

static void op_claim(bool dev_api, const char *devname, const char *owner)
{
	const char *op = dev_api ? "claim_dev" : "claim_group";
	void *cookie = owner ? owner_cookie(owner) : NULL;
	struct iommu_group *group;
	struct pci_dev *pdev;
	int ret;

	if (!cookie)
		REPLY("%s %d guard=1 why=usage", op, -EINVAL);
	pdev = op_target(op, devname, true, &group);
	if (!pdev)
		return;
	if (dev_api) {
#ifdef IH_HAVE_DEVICE_CLAIM
		ret = iommu_device_claim_dma_owner(&pdev->dev, cookie);
#else
		ret = -EOPNOTSUPP;
		iommu_group_put(group);
		pci_dev_put(pdev);
		REPLY("%s %d guard=1 why=not_exported", op, ret);
#endif
	} else {
		ret = iommu_group_claim_dma_owner(group, cookie);
	}
	if (!ret) {
		ret = add_hold(dev_api ? HOLD_CLAIM_DEV : HOLD_CLAIM_GROUP, group, pdev, NULL);
		group = NULL;
	}
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
	result("%s %d", op, ret);
}

static void op_release(bool dev_api, const char *devname)
{
	const char *op = dev_api ? "release_dev" : "release_group";
	struct iommu_group *group;
	struct pci_dev *pdev;
	struct ih_hold *hold;

	pdev = op_target(op, devname, false, &group);
	if (!pdev)
		return;
	/* Releasing a claim nobody holds WARNs in the kernel: only release our own claims. */
	hold = group ? find_hold(dev_api ? HOLD_CLAIM_DEV : HOLD_CLAIM_GROUP, group,
				 dev_api ? pdev : NULL, NULL) : NULL;
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
	if (!hold)
		REPLY("%s %d guard=1 why=not_claimed", op, -ENOENT);
	/* A release with PASIDs attached WARNs (6.12 __iommu_release_dma_ownership). */
	if (find_pasid_hold(hold->group, U32_MAX, NULL))
		REPLY("%s %d guard=1 why=pasid_attached", op, -EBUSY);
#ifdef IH_HAVE_DEVICE_CLAIM
	if (dev_api) {
		iommu_device_release_dma_owner(&hold->pdev->dev);
		drop_hold(hold);
		REPLY("%s 0", op);
	}
#endif
	group = hold->group;
	iommu_group_release_dma_owner(group);
	/*
	 * A group release drops every count at once, device claims of the same owner included:
	 * forget them all, or releasing one later would WARN (__iommu_release_dma_ownership).
	 */
	while ((hold = find_hold(HOLD_CLAIM_GROUP, group, NULL, NULL)) ||
	       (hold = find_hold(HOLD_CLAIM_DEV, group, NULL, NULL)))
		drop_hold(hold);
	result("%s 0", op);
}

/* ------------------------------------------------------------------ no guard: the WARN paths */

static void op_raw_detach(bool group_api, const char *h, const char *devname)
{
	const char *op = group_api ? "raw_detach_group" : "raw_detach_dev";
	struct ih_domain *d;
	struct iommu_group *group;
	struct pci_dev *pdev;

	pdev = op_domain_target(op, h, devname, group_api, &d, &group);
	if (!pdev)
		return;
	if (group_api)
		iommu_detach_group(d->domain, group);
	else
		iommu_detach_device(d->domain, &pdev->dev);	/* no group: returns at once */
	if (group) {
		resync_group(group);
		iommu_group_put(group);
	}
	pci_dev_put(pdev);
	result("%s 0", op);
}

static void op_raw_release_group(const char *devname)
{
	struct iommu_group *group;
	struct pci_dev *pdev = op_target("raw_release_group", devname, true, &group);

	if (!pdev)
		return;
	iommu_group_release_dma_owner(group);
	resync_group(group);
	iommu_group_put(group);
	pci_dev_put(pdev);
	result("raw_release_group 0");
}

/* ------------------------------------------------------------------ replace, PASID (6.12) */

static void op_replace(const char *h, const char *devname)
{
	struct ih_domain *d;
	struct iommu_group *group;
	struct pci_dev *pdev;
	int ret;

	pdev = op_domain_target("replace", h, devname, true, &d, &group);
	if (!pdev)
		return;
#ifdef IH_HAVE_REPLACE
	ret = iommu_group_replace_domain(group, d->domain);
	if (!ret) {
		resync_group(group);
		/* Already attached (by attach_dev or attach_group): that record stands for it. */
		if (!find_hold(HOLD_ATTACH_GROUP, group, NULL, d) &&
		    !find_hold(HOLD_ATTACH_DEV, group, NULL, d)) {
			ret = add_hold(HOLD_ATTACH_GROUP, group, pdev, d);
			group = NULL;	/* owned by the hold now */
		}
	}
	result("replace %d", ret);
#else
	ret = -EOPNOTSUPP;
	result("replace %d guard=1 why=not_exported", ret);
#endif
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
}

static void op_pasid(bool attach, const char *h, const char *devname, const char *pasid_s)
{
	const char *op = attach ? "attach_pasid" : "detach_pasid";
	struct ih_domain *d = h ? find_domain(h) : NULL;
	struct iommu_group *group;
	struct pci_dev *pdev;
	struct ih_hold *hold;
	u32 pasid;
	int ret = 0;

	if (!d)
		REPLY("%s %d guard=1 why=no_handle", op, -ENOENT);
	if (!pasid_s || kstrtou32(pasid_s, 0, &pasid))
		REPLY("%s %d guard=1 why=usage", op, -EINVAL);
	pdev = op_target(op, devname, false, &group);
	if (!pdev)
		return;
#ifdef IH_HAVE_PASID
	if (attach) {
		hold = group ? new_hold(HOLD_PASID, group, pdev, d) : NULL;
		if (group && !hold) {
			ret = -ENOMEM;
		} else {
			if (hold)
				hold->pasid = pasid;
			ret = iommu_attach_device_pasid(d->domain, &pdev->dev, pasid,
							hold ? &hold->handle : NULL);
			if (hold && ret) {
				hold->group = NULL;	/* the reference is still ours: put below */
				drop_hold(hold);
			} else if (hold) {
				group = NULL;	/* owned by the hold now */
			}
		}
		result("%s %d", op, ret);
	} else {
		/* Detaching a PASID that is not attached tears down whatever is there. */
		hold = group ? find_pasid_hold(group, pasid, d) : NULL;
		if (!hold) {
			result("%s %d guard=1 why=not_attached", op, -ENOENT);
		} else {
			iommu_detach_device_pasid(d->domain, &pdev->dev, pasid);
			drop_hold(hold);
			result("%s 0", op);
		}
	}
#else
	(void)hold;
	(void)pasid;
	ret = -EOPNOTSUPP;
	result("%s %d guard=1 why=not_exported", op, ret);
#endif
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
}

/* ------------------------------------------------------------------ map, unmap, DMA */

static void op_map(const char *h, const char *iova_s, const char *size_s)
{
	struct ih_domain *d = h ? find_domain(h) : NULL;
	unsigned long iova, size;
	struct ih_map *m;
	int ret, count = 0;

	if (!d)
		REPLY("map %d guard=1 why=no_handle", -ENOENT);
	if (!iova_s || !size_s || kstrtoul(iova_s, 0, &iova) || kstrtoul(size_s, 0, &size) ||
	    !size || size > (1UL << 20) || !PAGE_ALIGNED(iova) || !PAGE_ALIGNED(size))
		REPLY("map %d guard=1 why=usage", -EINVAL);
	for (m = ih_maps; m; m = m->next) {
		/* Mapping over a live mapping makes VT-d WARN ("DMA PTE ... already set"). */
		if (m->dom == d && iova < m->iova + m->size && m->iova < iova + size)
			REPLY("map %d guard=1 why=overlaps", -EEXIST);
		count++;
	}
	if (count >= MAX_MAPS)
		REPLY("map %d guard=1 why=too_many", -ENOSPC);
	m = kzalloc(sizeof(*m), GFP_KERNEL);
	if (!m)
		REPLY("map %d", -ENOMEM);
	m->buf = (void *)__get_free_pages(GFP_KERNEL | __GFP_ZERO, get_order(size));
	if (!m->buf) {
		kfree(m);
		REPLY("map %d", -ENOMEM);
	}
#ifdef IH_IOMMU_MAP_HAS_GFP
	ret = iommu_map(d->domain, iova, virt_to_phys(m->buf), size,
			IOMMU_READ | IOMMU_WRITE, GFP_KERNEL);
#else
	ret = iommu_map(d->domain, iova, virt_to_phys(m->buf), size, IOMMU_READ | IOMMU_WRITE);
#endif
	if (ret) {
		free_pages((unsigned long)m->buf, get_order(size));
		kfree(m);
		REPLY("map %d", ret);
	}
	m->dom = d;
	m->iova = iova;
	m->size = size;
	m->next = ih_maps;
	ih_maps = m;
	result("map 0");
}

static void drop_map(struct ih_map *gone, size_t *unmapped)
{
	struct ih_map **p;

	for (p = &ih_maps; *p; p = &(*p)->next)
		if (*p == gone) {
			*p = gone->next;
			*unmapped = iommu_unmap(gone->dom->domain, gone->iova, gone->size);
			free_pages((unsigned long)gone->buf, get_order(gone->size));
			kfree(gone);
			return;
		}
}

static struct ih_map *find_map(struct ih_domain *d, unsigned long iova)
{
	struct ih_map *m;

	for (m = ih_maps; m; m = m->next)
		if (m->dom == d && iova >= m->iova && iova < m->iova + m->size)
			return m;
	return NULL;
}

static void op_unmap(const char *h, const char *iova_s)
{
	struct ih_domain *d = h ? find_domain(h) : NULL;
	unsigned long iova;
	struct ih_map *m;
	size_t size, unmapped = 0;

	if (!d)
		REPLY("unmap %d guard=1 why=no_handle", -ENOENT);
	if (!iova_s || kstrtoul(iova_s, 0, &iova))
		REPLY("unmap %d guard=1 why=usage", -EINVAL);
	m = find_map(d, iova);
	if (!m || m->iova != iova)
		REPLY("unmap %d guard=1 why=not_mapped", -ENOENT);
	size = m->size;
	drop_map(m, &unmapped);
	result("unmap %d unmapped=%zu", unmapped == size ? 0 : -EIO, unmapped);
}

/* One edu transfer of len bytes between its buffer and a device address; 0 once done. */
static int edu_dma(struct ih_dev *idev, unsigned long addr, size_t len, bool to_ram)
{
	int i;

	writeq(to_ram ? EDU_BUFFER : addr, idev->bar + EDU_DMA_SRC);
	writeq(to_ram ? addr : EDU_BUFFER, idev->bar + EDU_DMA_DST);
	writeq(len, idev->bar + EDU_DMA_CNT);
	writeq(EDU_DMA_START | (to_ram ? EDU_DMA_TO_RAM : 0), idev->bar + EDU_DMA_CMD);
	/* QEMU's edu finishes a transfer on a 100 ms timer (hw/misc/edu.c: edu_dma_timer). */
	for (i = 0; i < 200; i++) {
		if (!(readq(idev->bar + EDU_DMA_CMD) & EDU_DMA_START))
			return 0;
		msleep(5);
	}
	return -ETIMEDOUT;
}

static struct ih_dev *bound_dev(const char *devname, const char *op)
{
	struct pci_dev *pdev = find_pci(devname);
	struct ih_dev *idev = pdev ? find_ih_dev(pdev) : NULL;

	pci_dev_put(pdev);
	if (!idev)
		result("%s %d guard=1 why=not_bound_to_ih_edu", op, -ENODEV);
	return idev;
}

/*
 * Through an identity domain an IOVA is a physical address: edu would write guest RAM at
 * random. A device with no group of its own (SMMUv3: the second device behind a PCIe-to-PCI
 * bridge shares the bridge alias's stream ID) DMAs through the domain of the bridge's group.
 */
static bool dma_would_bypass(struct pci_dev *pdev)
{
	struct iommu_domain *dom = iommu_get_domain_for_dev(&pdev->dev);
	struct iommu_group *group = iommu_group_get(&pdev->dev);

	if (group)
		iommu_group_put(group);
	else if (pdev->bus->self)
		dom = iommu_get_domain_for_dev(&pdev->bus->self->dev);
	return dom && dom->type == IOMMU_DOMAIN_IDENTITY;
}

static void op_dma(const char *devname, const char *h, const char *iova_s, const char *len_s)
{
	struct ih_domain *d = h ? find_domain(h) : NULL;
	unsigned long iova, len, i;
	struct ih_dev *idev;
	struct ih_map *m;
	u8 *buf;
	int ret;

	idev = bound_dev(devname, "dma");
	if (!idev)
		return;
	if (!d)
		REPLY("dma %d guard=1 why=no_handle", -ENOENT);
	if (!iova_s || !len_s || kstrtoul(iova_s, 0, &iova) || kstrtoul(len_s, 0, &len) || !len ||
	    len > EDU_DMA_MAX)
		REPLY("dma %d guard=1 why=usage", -EINVAL);
	m = find_map(d, iova);
	if (!m || iova + len > m->iova + m->size)
		REPLY("dma %d guard=1 why=not_mapped", -ENOENT);
	if (dma_would_bypass(idev->pdev))
		REPLY("dma %d guard=1 why=identity_domain", -EPERM);
	buf = (u8 *)m->buf + (iova - m->iova);
	for (i = 0; i < len; i++)
		buf[i] = (u8)(i * 7 + 0x5a);
	ret = edu_dma(idev, iova, len, false);		/* RAM -> device through the IOMMU */
	if (!ret) {
		memset(buf, 0, len);
		ret = edu_dma(idev, iova, len, true);	/* device -> RAM through the IOMMU */
	}
	if (ret)
		REPLY("dma %d", ret);
	for (i = 0; i < len; i++)
		if (buf[i] != (u8)(i * 7 + 0x5a))
			REPLY("dma %d bad_byte=%lu", -EIO, i);
	result("dma 0 bytes=%lu", len);
}

static void op_dma_raw(const char *devname, const char *iova_s, const char *dir)
{
	struct ih_dev *idev = bound_dev(devname, "dma_raw");
	unsigned long iova;

	if (!idev)
		return;
	if (!iova_s || !dir || kstrtoul(iova_s, 0, &iova) ||
	    (strcmp(dir, "to_ram") && strcmp(dir, "from_ram")))
		REPLY("dma_raw %d guard=1 why=usage", -EINVAL);
	if (dma_would_bypass(idev->pdev))
		REPLY("dma_raw %d guard=1 why=identity_domain", -EPERM);
	result("dma_raw %d", edu_dma(idev, iova, 8, !strcmp(dir, "to_ram")));
}

/* ------------------------------------------------------------------ state */

static void op_state(const char *devname)
{
	struct pci_dev *pdev = find_pci(devname);
	struct iommu_group *group;
	struct iommu_domain *dom;
	struct ih_domain *d;
	const char *what = "none";
	char handle[24];

	if (!pdev)
		REPLY("state %d guard=1 why=no_device", -ENODEV);
	group = iommu_group_get(&pdev->dev);
	dom = iommu_get_domain_for_dev(&pdev->dev);
	if (dom) {
		what = "unmanaged";
		for (d = ih_domains; d; d = d->next)
			if (d->domain == dom) {
				snprintf(handle, sizeof(handle), "@%s", d->name);
				what = handle;
			}
		if (what != handle) {
			if (dom->type == IOMMU_DOMAIN_BLOCKED)
				what = "blocked";
			else if (dom->type & __IOMMU_DOMAIN_DMA_API)
				what = "default";
			else if (dom->type == IOMMU_DOMAIN_IDENTITY)
				what = "identity";
		}
	}
	result("state 0 group=%d domain=%s type=%d driver=%s", group ? iommu_group_id(group) : -1,
	       what, dom ? (int)dom->type : -1,
	       pdev->dev.driver ? pdev->dev.driver->name : "-");
	if (group)
		iommu_group_put(group);
	pci_dev_put(pdev);
}

struct member_list {
	char buf[MAX_LINE - 64];
	size_t len;
};

static int add_member(struct device *dev, void *data)
{
	struct member_list *m = data;

	m->len += scnprintf(m->buf + m->len, sizeof(m->buf) - m->len, "%s%s",
			    m->len ? "," : "", dev_name(dev));
	return 0;
}

static void op_members(const char *devname)
{
	struct pci_dev *pdev = find_pci(devname);
	struct iommu_group *group;
	struct member_list m = { .len = 0 };

	if (!pdev)
		REPLY("members %d guard=1 why=no_device", -ENODEV);
	group = iommu_group_get(&pdev->dev);
	pci_dev_put(pdev);
	if (!group)
		REPLY("members %d why=no_group", -ENODEV);
	iommu_group_for_each_dev(group, &m, add_member);
	result("members 0 group=%d devices=%s", iommu_group_id(group), m.buf);
	iommu_group_put(group);
}

/* ------------------------------------------------------------------ reset */

static void detach_pasid_hold(struct ih_hold *h)
{
#ifdef IH_HAVE_PASID
	iommu_detach_device_pasid(h->dom->domain, &h->pdev->dev, h->pasid);
#endif
	drop_hold(h);
}

static void reset_all(void)
{
	size_t unmapped;

	struct ih_hold *p;

	while (ih_maps)
		drop_map(ih_maps, &unmapped);
	/* PASIDs first: a DMA-owner release with PASIDs attached WARNs. */
	while ((p = ih_holds ? find_hold(HOLD_PASID, NULL, NULL, NULL) : NULL))
		detach_pasid_hold(p);
	while (ih_holds) {
		struct ih_hold *h = ih_holds;

		switch (h->kind) {
		case HOLD_ATTACH_DEV:
		case HOLD_ATTACH_GROUP:
			if (h->pdev && iommu_get_domain_for_dev(&h->pdev->dev) == h->dom->domain)
				iommu_detach_group(h->dom->domain, h->group);
			break;
#ifdef IH_HAVE_DEVICE_CLAIM
		case HOLD_CLAIM_DEV:
			iommu_device_release_dma_owner(&h->pdev->dev);
			break;
#endif
		case HOLD_CLAIM_GROUP:
			iommu_group_release_dma_owner(h->group);
			break;
		}
		drop_hold(h);
	}
	while (ih_domains) {
		struct ih_domain *d = ih_domains;

		ih_domains = d->next;
		iommu_domain_free(d->domain);
		kfree(d);
	}
	memset(ih_owner_names, 0, sizeof(ih_owner_names));
}

/* ------------------------------------------------------------------ dispatch */

static void op_reset(void)
{
	reset_all();
	result("reset 0");
}

/*
 * The operations: name, number of arguments, handler (argv[0] is the name). The harness's
 * model has the same table (harness/model/core.py: OPERATION_ARGS), and a unit test checks
 * the two against each other.
 */
static void do_alloc(char **a) { op_alloc(a[1], a[2]); }
static void do_free(char **a) { op_free(a[1]); }
static void do_attach_dev(char **a) { op_attach(false, a[1], a[2]); }
static void do_attach_group(char **a) { op_attach(true, a[1], a[2]); }
static void do_detach_dev(char **a) { op_detach(false, a[1], a[2]); }
static void do_detach_group(char **a) { op_detach(true, a[1], a[2]); }
static void do_claim_group(char **a) { op_claim(false, a[1], a[2]); }
static void do_claim_dev(char **a) { op_claim(true, a[1], a[2]); }
static void do_release_group(char **a) { op_release(false, a[1]); }
static void do_release_dev(char **a) { op_release(true, a[1]); }
static void do_map(char **a) { op_map(a[1], a[2], a[3]); }
static void do_unmap(char **a) { op_unmap(a[1], a[2]); }
static void do_dma(char **a) { op_dma(a[1], a[2], a[3], a[4]); }
static void do_dma_raw(char **a) { op_dma_raw(a[1], a[2], a[3]); }
static void do_raw_detach_dev(char **a) { op_raw_detach(false, a[1], a[2]); }
static void do_raw_detach_group(char **a) { op_raw_detach(true, a[1], a[2]); }
static void do_raw_release_group(char **a) { op_raw_release_group(a[1]); }
static void do_replace(char **a) { op_replace(a[1], a[2]); }
static void do_attach_pasid(char **a) { op_pasid(true, a[1], a[2], a[3]); }
static void do_detach_pasid(char **a) { op_pasid(false, a[1], a[2], a[3]); }
static void do_state(char **a) { op_state(a[1]); }
static void do_members(char **a) { op_members(a[1]); }
static void do_reset(char **a) { op_reset(); }

struct ih_op {
	const char *name;
	int arity;
	void (*run)(char **argv);
};

static const struct ih_op ih_ops[] = {
	{ "alloc", 2, do_alloc },
	{ "free", 1, do_free },
	{ "attach_dev", 2, do_attach_dev },
	{ "attach_group", 2, do_attach_group },
	{ "detach_dev", 2, do_detach_dev },
	{ "detach_group", 2, do_detach_group },
	{ "claim_group", 2, do_claim_group },
	{ "claim_dev", 2, do_claim_dev },
	{ "release_group", 1, do_release_group },
	{ "release_dev", 1, do_release_dev },
	{ "map", 3, do_map },
	{ "unmap", 2, do_unmap },
	{ "dma", 4, do_dma },
	{ "dma_raw", 3, do_dma_raw },
	{ "raw_detach_dev", 2, do_raw_detach_dev },
	{ "raw_detach_group", 2, do_raw_detach_group },
	{ "raw_release_group", 1, do_raw_release_group },
	{ "replace", 2, do_replace },
	{ "attach_pasid", 3, do_attach_pasid },
	{ "detach_pasid", 3, do_detach_pasid },
	{ "state", 1, do_state },
	{ "members", 1, do_members },
	{ "reset", 0, do_reset },
};

static void run_line(char *line)
{
	char *argv[6] = { NULL };
	int argc = 0;
	size_t i;
	char *tok;

	while ((tok = strsep(&line, " \t")) && argc < 6)
		if (*tok)
			argv[argc++] = tok;
	if (!argc)
		return;
	if (tok)
		REPLY("%.32s %d guard=1 why=too_many_arguments", argv[0], -E2BIG);
	for (i = 0; i < ARRAY_SIZE(ih_ops); i++) {
		if (strcmp(argv[0], ih_ops[i].name))
			continue;
		if (argc - 1 != ih_ops[i].arity)
			REPLY("%s %d guard=1 why=arguments", ih_ops[i].name, -EINVAL);
		ih_ops[i].run(argv);
		return;
	}
	result("? %d guard=1 why=unknown_operation", -EINVAL);
}

struct ih_file {
	char partial[MAX_LINE];
	size_t len;
	bool overlong;		/* the current line is too long: skip to its end */
};

static void feed(struct ih_file *f, const char *data, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char c = data[i];

		if (c == '\n') {
			if (f->overlong)
				result("? %d guard=1 why=line_too_long", -E2BIG);
			else if (f->len) {
				f->partial[f->len] = '\0';
				run_line(f->partial);
			}
			f->len = 0;
			f->overlong = false;
		} else if (f->overlong) {
			continue;
		} else if (f->len >= MAX_LINE - 1) {
			f->overlong = true;
		} else {
			/* anything unprintable becomes a space, so no op name can hide it */
			f->partial[f->len++] = (c >= 0x20 && c < 0x7f) ? c : ' ';
		}
	}
}

static int ctl_open(struct inode *inode, struct file *file)
{
	file->private_data = kzalloc(sizeof(struct ih_file), GFP_KERNEL);
	return file->private_data ? 0 : -ENOMEM;
}

static ssize_t ctl_write(struct file *file, const char __user *ubuf, size_t len, loff_t *pos)
{
	char chunk[512];
	size_t done = 0;

	mutex_lock(&ih_lock);
	while (done < len) {
		size_t n = min(len - done, sizeof(chunk));

		if (copy_from_user(chunk, ubuf + done, n)) {
			mutex_unlock(&ih_lock);
			return done ? done : -EFAULT;
		}
		feed(file->private_data, chunk, n);
		done += n;
	}
	mutex_unlock(&ih_lock);
	return len;
}

static ssize_t ctl_read(struct file *file, char __user *ubuf, size_t len, loff_t *pos)
{
	size_t n;

	mutex_lock(&ih_lock);
	n = min(len, ih_results_len);
	if (n && copy_to_user(ubuf, ih_results, n)) {
		mutex_unlock(&ih_lock);
		return -EFAULT;
	}
	memmove(ih_results, ih_results + n, ih_results_len - n);
	ih_results_len -= n;
	mutex_unlock(&ih_lock);
	return n;
}

static int ctl_release(struct inode *inode, struct file *file)
{
	struct ih_file *f = file->private_data;

	mutex_lock(&ih_lock);
	if (f->len && !f->overlong)
		feed(f, "\n", 1);	/* a last line without its newline still runs */
	mutex_unlock(&ih_lock);
	kfree(f);
	return 0;
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.open = ctl_open,
	.write = ctl_write,
	.read = ctl_read,
	.release = ctl_release,
};

/* ------------------------------------------------------------------ PCI drivers */

static int ih_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct ih_dev *idev;
	int ret;

	if (pdev->vendor != EDU_VENDOR || pdev->device != EDU_DEVICE)
		return -ENODEV;
	idev = kzalloc(sizeof(*idev), GFP_KERNEL);
	if (!idev)
		return -ENOMEM;
	ret = pci_enable_device(pdev);
	if (ret)
		goto free;
	idev->bar = pci_iomap(pdev, 0, 0);
	if (!idev->bar) {
		ret = -ENOMEM;
		goto disable;
	}
	pci_set_master(pdev);
	idev->pdev = pdev;
	idev->owned = to_pci_driver(pdev->dev.driver)->driver_managed_dma;
	pci_set_drvdata(pdev, idev);
	mutex_lock(&ih_lock);
	list_add(&idev->node, &ih_devs);
	mutex_unlock(&ih_lock);
	return 0;
disable:
	pci_disable_device(pdev);
free:
	kfree(idev);
	return ret;
}

static void ih_remove(struct pci_dev *pdev)
{
	struct ih_dev *idev = pci_get_drvdata(pdev);

	struct iommu_group *group = iommu_group_get(&pdev->dev);
	struct ih_hold *h;

	mutex_lock(&ih_lock);
	list_del(&idev->node);
	/*
	 * Our PASID attachments on this group go with the driver: with any left, the driver
	 * core's iommu_device_unuse_default_domain would WARN and keep its count (6.12).
	 */
	while (group && (h = find_pasid_hold(group, U32_MAX, NULL)))
		detach_pasid_hold(h);
	mutex_unlock(&ih_lock);
	if (group)
		iommu_group_put(group);
	pci_clear_master(pdev);
	pci_iounmap(pdev, idev->bar);
	pci_disable_device(pdev);
	kfree(idev);
}

/* No id table: these drivers bind only where driver_override names them. */
static struct pci_driver ih_edu_driver = {
	.name = "ih_edu",
	.probe = ih_probe,
	.remove = ih_remove,
};

static struct pci_driver ih_edu_owned_driver = {
	.name = "ih_edu_owned",
	.probe = ih_probe,
	.remove = ih_remove,
	.driver_managed_dma = true,
};

static int __init ih_attach_init(void)
{
	int ret;

	ih_results = kvzalloc(MAX_RESULTS, GFP_KERNEL);
	if (!ih_results)
		return -ENOMEM;
	ret = pci_register_driver(&ih_edu_driver);
	if (ret)
		goto free;
	ret = pci_register_driver(&ih_edu_owned_driver);
	if (ret)
		goto unregister;
	ih_dir = debugfs_create_dir("ih_attach", NULL);
	debugfs_create_file("ctl", 0600, ih_dir, NULL, &ctl_fops);
	return 0;
unregister:
	pci_unregister_driver(&ih_edu_driver);
free:
	kvfree(ih_results);
	return ret;
}

static void __exit ih_attach_exit(void)
{
	debugfs_remove_recursive(ih_dir);
	mutex_lock(&ih_lock);
	reset_all();
	mutex_unlock(&ih_lock);
	pci_unregister_driver(&ih_edu_owned_driver);
	pci_unregister_driver(&ih_edu_driver);
	kvfree(ih_results);
}

module_init(ih_attach_init);
module_exit(ih_attach_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iommu-harness: drive the IOMMU attach and DMA-ownership APIs from debugfs");
