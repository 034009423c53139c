// SPDX-License-Identifier: GPL-2.0
/*
 * ih_smoke: the smallest module the harness builds for a guest kernel. On load it reports, for
 * each QEMU edu device (PCI 1234:11e8), the IOMMU group the kernel gave it, or that it has none
 * (on SMMUv3 an unbound device has no group). It proves that a module built with the target
 * kernel's kbuild, natively or cross, loads and unloads cleanly.
 *
 * fault=KIND makes the load raise one real kernel report, for the harness's kernel-log
 * classifier and verdicts to be tested on the real thing:
 *   warn        WARN()
 *   refcount    a refcount_t underflow (lib/refcount.c warns)
 *   list        a corrupted list_add (CONFIG_DEBUG_LIST; BUG_ON_DATA_CORRUPTION: BUG, oops)
 *   oops        a NULL pointer dereference
 *   softlockup  spin with preemption off for 5 s (set kernel.watchdog_thresh=1 first)
 *   hung        sleep uninterruptibly for 4 s (set kernel.hung_task_timeout_secs=1 first)
 *   rcustall    spin with preemption off for 8 s (set rcupdate.rcu_cpu_stall_timeout=3 first)
 *   dma         make the first edu device that has an IOMMU group DMA 8 bytes to IOVA
 *               0x900000, which nothing maps: the IOMMU faults (a DMAR fault record on
 *               VT-d, an SMMUv3 event). The device is borrowed from whatever driver it has.
 * After a fault that is not fatal the load succeeds (rmmod it): a failed load would make
 * busybox insmod retry with init_module(2) and raise the report twice.
 */
#include <linux/delay.h>
#include <linux/io.h>
#include <linux/iommu.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/preempt.h>
#include <linux/refcount.h>
#include <linux/string.h>

#include "edu.h"

#define UNMAPPED_IOVA 0x900000

static char *fault = "";
module_param(fault, charp, 0444);
MODULE_PARM_DESC(fault, "raise one kernel report on load: warn, refcount, list, oops, "
			"softlockup, hung");

static int ih_smoke_dma_fault(void)
{
	struct pci_dev *pdev = NULL;
	void __iomem *bar;
	int i;

	while ((pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, pdev))) {
		struct iommu_group *group = iommu_group_get(&pdev->dev);

		if (group) {
			iommu_group_put(group);
			break;
		}
	}
	if (!pdev) {
		pr_err("ih_smoke: fault=dma: no edu device with an IOMMU group\n");
		return -ENODEV;
	}
	if (pci_enable_device(pdev)) {
		pci_dev_put(pdev);
		return -EIO;
	}
	pci_set_master(pdev);
	bar = pci_iomap(pdev, 0, 0);
	if (!bar) {
		pci_disable_device(pdev);
		pci_dev_put(pdev);
		return -ENOMEM;
	}
	writeq(EDU_BUFFER, bar + EDU_DMA_SRC);
	writeq(UNMAPPED_IOVA, bar + EDU_DMA_DST);
	writeq(8, bar + EDU_DMA_CNT);
	writeq(EDU_DMA_START | EDU_DMA_TO_RAM, bar + EDU_DMA_CMD);
	for (i = 0; i < 100 && (readq(bar + EDU_DMA_CMD) & EDU_DMA_START); i++)
		msleep(10);
	pr_info("ih_smoke: fault=dma: %s wrote to IOVA %#x\n", pci_name(pdev), UNMAPPED_IOVA);
	pci_clear_master(pdev);
	pci_iounmap(pdev, bar);
	pci_disable_device(pdev);
	pci_dev_put(pdev);
	return 0;
}

static int ih_smoke_fault(void)
{
	if (!strcmp(fault, "warn")) {
		WARN(1, "ih_smoke: warning requested with fault=warn\n");
	} else if (!strcmp(fault, "refcount")) {
		refcount_t ref = REFCOUNT_INIT(0);

		refcount_dec(&ref);
	} else if (!strcmp(fault, "list")) {
		LIST_HEAD(head);
		struct list_head entry = { .next = &entry, .prev = &entry };

		head.next = &entry;  /* head.next->prev != &head: list_add sees the corruption */
		list_add(&entry, &head);
	} else if (!strcmp(fault, "oops")) {
		int *volatile nowhere = NULL;

		*nowhere = 1;
	} else if (!strcmp(fault, "softlockup")) {
		int i;

		preempt_disable();
		for (i = 0; i < 5000; i++)
			mdelay(1);
		preempt_enable();
	} else if (!strcmp(fault, "hung")) {
		msleep(4000);
	} else if (!strcmp(fault, "rcustall")) {
		int i;

		preempt_disable();
		for (i = 0; i < 8000; i++)
			mdelay(1);
		preempt_enable();
	} else if (!strcmp(fault, "dma")) {
		int ret = ih_smoke_dma_fault();

		if (ret)
			return ret;
	} else {
		pr_err("ih_smoke: unknown fault '%s'\n", fault);
		return -EINVAL;
	}
	pr_info("ih_smoke: fault=%s done\n", fault);
	return 0;
}

static int __init ih_smoke_init(void)
{
	struct pci_dev *pdev = NULL;
	int n = 0;

	if (fault[0])
		return ih_smoke_fault();
	while ((pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, pdev))) {
		struct iommu_group *group = iommu_group_get(&pdev->dev);

		if (group) {
			pr_info("ih_smoke: %s group %d\n", pci_name(pdev), iommu_group_id(group));
			iommu_group_put(group);
		} else {
			pr_info("ih_smoke: %s no group\n", pci_name(pdev));
		}
		n++;
	}
	pr_info("ih_smoke: loaded, %d edu devices\n", n);
	return 0;
}

static void __exit ih_smoke_exit(void)
{
	pr_info("ih_smoke: unloaded\n");
}

module_init(ih_smoke_init);
module_exit(ih_smoke_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("iommu-harness smoke module: report the IOMMU groups of edu devices");
