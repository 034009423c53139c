/* SPDX-License-Identifier: GPL-2.0 */
/*
 * QEMU's edu test device, as docs/specs/edu.rst in QEMU describes it: PCI 1234:11e8; in BAR0
 * the DMA source, destination, count and command registers; command bit 0 starts a transfer,
 * bit 1 set means device buffer -> RAM; the device's own buffer sits at device address 0x40000.
 */
#ifndef IH_EDU_H
#define IH_EDU_H

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define EDU_DMA_SRC 0x80
#define EDU_DMA_DST 0x88
#define EDU_DMA_CNT 0x90
#define EDU_DMA_CMD 0x98
#define EDU_DMA_START 0x1
#define EDU_DMA_TO_RAM 0x2
#define EDU_BUFFER 0x40000

#endif
