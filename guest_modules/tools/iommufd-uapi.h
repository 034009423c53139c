/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The iommufd and VFIO-cdev ioctls ih-vfio uses, under names of our own so that the helper
 * builds against any C library's kernel headers (Debian 12's are 6.1's, which have neither).
 * The numbers and layouts are the kernel's stable uAPI, as in Debian's linux-source-7.2:
 * include/uapi/linux/iommufd.h (IOMMUFD_TYPE ';', commands from 0x80) and
 * include/uapi/linux/vfio.h (VFIO_TYPE ';', VFIO_BASE 100; the cdev ioctls are VFIO_BASE + 18,
 * 19 and 20, since 6.6). A struct may be shorter than the kernel's newest: its size field
 * says how much the caller passes, and the kernel zero-fills the rest.
 */
#ifndef IH_IOMMUFD_UAPI_H
#define IH_IOMMUFD_UAPI_H

#include <linux/ioctl.h>
#include <stdint.h>

#define IH_IOMMUFD_TYPE ';'
#define IH_IOMMU_DESTROY _IO(IH_IOMMUFD_TYPE, 0x80)
#define IH_IOMMU_IOAS_ALLOC _IO(IH_IOMMUFD_TYPE, 0x81)
#define IH_IOMMU_IOAS_MAP _IO(IH_IOMMUFD_TYPE, 0x85)
#define IH_IOMMU_IOAS_UNMAP _IO(IH_IOMMUFD_TYPE, 0x86)
#define IH_IOMMU_HWPT_ALLOC _IO(IH_IOMMUFD_TYPE, 0x89)

#define IH_IOMMU_IOAS_MAP_FIXED_IOVA (1u << 0)
#define IH_IOMMU_IOAS_MAP_WRITEABLE (1u << 1)
#define IH_IOMMU_IOAS_MAP_READABLE (1u << 2)

struct ih_iommu_destroy { uint32_t size; uint32_t id; };
struct ih_iommu_ioas_alloc { uint32_t size; uint32_t flags; uint32_t out_ioas_id; };
struct ih_iommu_ioas_map {
	uint32_t size, flags, ioas_id, reserved;
	uint64_t user_va, length, iova;
};
struct ih_iommu_ioas_unmap { uint32_t size, ioas_id; uint64_t iova, length; };
/* Up to data_uptr: no driver-specific data, no fault queue. */
struct ih_iommu_hwpt_alloc {
	uint32_t size, flags, dev_id, pt_id, out_hwpt_id, reserved, data_type, data_len;
	uint64_t data_uptr;
};

#define IH_VFIO_TYPE ';'
#define IH_VFIO_BASE 100
#define IH_VFIO_DEVICE_BIND_IOMMUFD _IO(IH_VFIO_TYPE, IH_VFIO_BASE + 18)
#define IH_VFIO_DEVICE_ATTACH_IOMMUFD_PT _IO(IH_VFIO_TYPE, IH_VFIO_BASE + 19)
#define IH_VFIO_DEVICE_DETACH_IOMMUFD_PT _IO(IH_VFIO_TYPE, IH_VFIO_BASE + 20)

/* Up to out_devid: no token. */
struct ih_vfio_device_bind_iommufd { uint32_t argsz, flags; int32_t iommufd; uint32_t out_devid; };
/* Up to pt_id: no PASID. */
struct ih_vfio_device_attach_iommufd_pt { uint32_t argsz, flags, pt_id; };
struct ih_vfio_device_detach_iommufd_pt { uint32_t argsz, flags; };

#endif
