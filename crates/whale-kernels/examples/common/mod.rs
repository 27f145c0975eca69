//! What the timing examples share.

use whale_kernels::GgmlType;

/// `rows` rows of `cols` random `ty` weights with small finite f16 scales
/// (the high byte of each block's f16 fields set), so that the products
/// time real arithmetic, not infinities.
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).expect("cols is a multiple of the block size");
    let mut s = 7u64;
    let mut w: Vec<u8> = (0..rows * rb)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as u8
        })
        .collect();
    let bb = ty.type_size();
    for blk in w.chunks_exact_mut(bb) {
        if ty.is_iquant() {
            whale_kernels::iq::set_block_d(ty, blk, 0.01);
            continue;
        }
        blk[1] = 0x1c;
        match ty {
            GgmlType::Q6_K => blk[bb - 1] = 0x1c,
            GgmlType::Q4_K => blk[3] = 0x1c,
            _ => {}
        }
    }
    w
}
