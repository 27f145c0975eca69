//! What the timing examples share.

use whale_kernels::GgmlType;

/// `rows` rows of `cols` random `ty` weights with small finite f16 scales
/// (the high byte of each block's f16 fields set), so that the products
/// time real arithmetic, not infinities.
pub fn random_weights(ty: GgmlType, rows: usize, cols: usize) -> Vec<u8> {
    let rb = ty.row_bytes(cols).expect("cols is a multiple of the block size");
    let mut s = 7u64;
    let mut w: Vec<u8> = Vec::with_capacity(rows * rb);
    huge_pages(&mut w);
    w.extend((0..rows * rb).map(|_| {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 33) as u8
    }));
    let bb = ty.type_size();
    for blk in w.chunks_exact_mut(bb) {
        if ty.is_iquant() {
            whale_kernels::iq::set_block_d(ty, blk, 0.01);
            continue;
        }
        blk[1] = 0x1c;
        match ty {
            GgmlType::Q6_K => blk[bb - 1] = 0x1c,
            GgmlType::Q4_K | GgmlType::Q4_1 | GgmlType::Q5_1 => blk[3] = 0x1c,
            _ => {}
        }
    }
    w
}

/// Asks for 2 MiB pages under the (not yet written) capacity of `w`, as a
/// model's weights get: the kernel maps a cached GGUF file's pages 2 MiB at
/// a time (`FilePmdMapped` in `/proc/PID/smaps`), while a heap buffer would
/// get 4 KiB pages where transparent huge pages are `madvise` only, and
/// streamed from memory at 5-10 % less.
pub fn huge_pages<T>(w: &mut Vec<T>) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (w.as_mut_ptr() as usize).next_multiple_of(HUGE);
        let end = (w.as_mut_ptr() as usize + w.capacity() * size_of::<T>()) / HUGE * HUGE;
        if end > start {
            // SAFETY: advice on whole pages inside this allocation; it
            // changes no contents and the result is only a hint.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = w;
}
