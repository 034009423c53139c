// SPDX-License-Identifier: GPL-2.0
/*
 * ih_smoke: the smallest module the harness builds for a guest kernel. On load it reports, for
 * each QEMU edu device (PCI 1234:11e8), the IOMMU group the kernel gave it, or that it has none
 * (on SMMUv3 an unbound device has no group). It proves that a module built with the target
 * kernel's kbuild, natively or cross, loads and unloads cleanly. With warn=1 it also raises
 * one WARNING on load: a real splat for the harness's kernel-log verdicts to catch.
 */
#include <linux/iommu.h>
#include <linux/module.h>
#include <linux/pci.h>

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8

static bool warn;
module_param(warn, bool, 0444);
MODULE_PARM_DESC(warn, "raise a WARNING on load (tests the harness's splat detection)");

static int __init ih_smoke_init(void)
{
	struct pci_dev *pdev = NULL;
	int n = 0;

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
	WARN(warn, "ih_smoke: warning requested with warn=1\n");
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
