/* What the AMX kernels (i2s_amx.c, head_amx.c) share: the tile configuration that
 * _tile_loadconfig reads. Included after the kernel's ISA pragma. */
#ifndef ER_AMX_TILES_H
#define ER_AMX_TILES_H

#include <stdint.h>
#include <string.h>

/* The 64-byte tile configuration of palette 1: for each of the 8 tiles its row count and
 * bytes per row (colsb); the other bytes are reserved and must be zero. */
typedef struct {
    uint8_t palette_id;
    uint8_t start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((aligned(64))) er_amx_tilecfg;

/* A zeroed palette-1 configuration: set the tiles' rows and colsb, then _tile_loadconfig it. */
static inline void er_amx_tilecfg_init(er_amx_tilecfg *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->palette_id = 1;
}

#endif
