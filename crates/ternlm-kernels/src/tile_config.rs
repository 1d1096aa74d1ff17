//! AMX tile configurations: the 64-byte operand of `ldtilecfg`, built from each tile's
//! shape, shared by every kernel family that runs on tiles.

/// `ldtilecfg`'s operand (palette 1): byte 0 the palette, bytes 16.. two per tile (bytes per
/// row), bytes 48.. one per tile (rows).
#[repr(C, align(64))]
pub(crate) struct TileConfig([u8; 64]);

impl TileConfig {
    /// Tile `t` as `shapes[t]` = (rows, bytes per row).
    pub(crate) const fn new(shapes: [(u8, u16); 8]) -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            let (rows, colsb) = shapes[t];
            let b = colsb.to_le_bytes();
            c[16 + 2 * t] = b[0];
            c[17 + 2 * t] = b[1];
            c[48 + t] = rows;
            t += 1;
        }
        Self(c)
    }

    /// Every tile 16 rows of 64 bytes.
    pub(crate) const FULL: Self = Self::new([(16, 64); 8]);

    /// Loads this configuration into the tile registers.
    ///
    /// # Safety
    /// The CPU must have AMX-TILE and this process the tile state (the AMX level).
    #[inline(always)]
    pub(crate) unsafe fn load(&self) {
        // SAFETY: the caller vouches for AMX; the operand is 64 readable bytes.
        unsafe { std::arch::asm!("ldtilecfg [{}]", in(reg) self.0.as_ptr(), options(nostack, readonly)) };
    }
}
