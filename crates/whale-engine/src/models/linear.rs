//! Linear layers over weights in any stored format, the token embedding
//! and the output head (final norm and projection to the vocabulary).

use std::sync::Arc;

use whale_kernels::fp8::Fp8Matrix;
use whale_kernels::x8::Layout;
use whale_kernels::GgmlType;

use crate::formats::names;
use crate::formats::storage::ByteSlice;
use crate::formats::weights::{TensorView, WeightStore};
use crate::models::{batch_spans, ops, Logits, ModelError};

/// A linear layer `y = W x (+ b)` with `W` `[rows, cols]` in any stored format.
#[derive(Clone, Debug)]
pub struct Linear {
    pub ty: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    pub data: ByteSlice,
    /// How the rows of `data` are stored: as in the file, or eight at a
    /// time interleaved for the decode kernels (rewritten so at load, see
    /// `GgufFile::interleave_x8`).
    pub layout: Layout,
    pub bias: Option<Vec<f32>>,
    /// FP8 weights ([`GgmlType::F8_E4M3`]) only: their block scales.
    pub fp8: Option<Fp8Scales>,
}

/// The 128×128 block scales of an FP8 matrix, and the row of the tensor
/// they belong to where this matrix starts (a slice of rows, such as one
/// head of MLA's `kv_b_proj`, keeps the tensor's scale grid).
#[derive(Clone, Debug)]
pub struct Fp8Scales {
    pub scales: Arc<[f32]>,
    pub row0: usize,
}

/// The most rows [`Linear::swiglu_ffn`] takes through a feed-forward at
/// once where its weights are block-quantized.
pub const FFN_PIECE_ROWS: usize = 128;

impl Linear {
    pub fn from_view(t: TensorView, bias: Option<Vec<f32>>) -> Linear {
        let (rows, cols) = (t.shape[0], t.shape[1]);
        let fp8 = t.scales.map(|scales| Fp8Scales { scales, row0: 0 });
        Linear { ty: t.ty, rows, cols, data: t.data, layout: t.layout, bias, fp8 }
    }

    /// Rows `r0..r0 + n` of a 2-D (or flattened 3-D) tensor, without
    /// copying, unless the tensor's rows are interleaved and the slice cuts
    /// a group of eight: then its rows are copied out in the file's layout.
    pub fn row_slice(t: &TensorView, r0: usize, n: usize, cols: usize) -> Linear {
        let rb = t.ty.row_bytes(cols).expect("checked by WeightStore");
        let fp8 = t.scales.clone().map(|scales| Fp8Scales { scales, row0: r0 });
        let groups = whale_kernels::x8::ROWS;
        let (data, layout) = match t.layout {
            Layout::X8 if !(r0.is_multiple_of(groups) && n.is_multiple_of(groups)) => {
                let mut rows = vec![0u8; n * rb];
                for (k, out) in rows.chunks_exact_mut(rb).enumerate() {
                    whale_kernels::x8::row_in_file_layout(t.ty, cols, &t.data, r0 + k, out)
                        .expect("an interleaved tensor holds whole groups of its rows");
                }
                (ByteSlice::from_vec(rows), Layout::File)
            }
            layout => (t.data.sub(r0 * rb..(r0 + n) * rb), layout),
        };
        Linear { ty: t.ty, rows: n, cols, data, layout, bias: None, fp8 }
    }

    /// An owned f32 matrix.
    pub fn from_f32(rows: usize, cols: usize, data: &[f32]) -> Linear {
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        let data = ByteSlice::from_vec(bytes);
        Linear { ty: GgmlType::F32, rows, cols, data, layout: Layout::File, bias: None, fp8: None }
    }

    /// The weights as an FP8 matrix; `None` unless they are FP8.
    fn fp8_matrix(&self) -> Option<Fp8Matrix<'_>> {
        let s = self.fp8.as_ref().filter(|_| self.ty == GgmlType::F8_E4M3)?;
        Some(Fp8Matrix { w: &self.data, scales: &s.scales, rows: self.rows, cols: self.cols, row0: s.row0 })
    }

    /// Whether products go through the quantized-activation kernels
    /// (`matmul_q`), which can run several matrices as one pool job.
    fn integer_kernels(&self) -> bool {
        !matches!(self.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::F8_E4M3)
    }

    /// `x`: `[m, cols]` → `[m, rows]`.
    ///
    /// Block-quantized weights take activations quantized to 8-bit blocks
    /// (the weight type's `vec_dot_type`), exactly as llama.cpp computes: that is
    /// what makes greedy output agree with it, and integer dot products are
    /// faster. Float weights (F32/F16/BF16, and FP8 with its block scales)
    /// take f32 activations, as the Hugging Face reference does.
    pub fn forward(&self, x: &[f32], m: usize, threads: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * self.rows];
        match self.ty {
            GgmlType::F8_E4M3 => {
                let w = self.fp8_matrix().expect("FP8 weights are loaded with their scales");
                whale_kernels::fp8::matmul(w, x, m, &mut y, threads)
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 if m == 1 => {
                whale_kernels::matvec(self.ty, &self.data, self.rows, self.cols, x, &mut y, threads)
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                whale_kernels::matmul(self.ty, &self.data, self.rows, self.cols, x, m, &mut y, threads)
            }
            _ if self.layout == Layout::X8 => {
                let mut p = [self.product(&mut y)];
                whale_kernels::matmul_q_many(&mut p, self.cols, x, m, threads)
            }
            _ => whale_kernels::matmul_q(self.ty, &self.data, self.rows, self.cols, x, m, &mut y, threads),
        }
        self.add_bias(&mut y);
        y
    }

    /// This matrix as one product of `matmul_q_many`, into `y`.
    fn product<'a>(&'a self, y: &'a mut [f32]) -> whale_kernels::QProduct<'a> {
        whale_kernels::QProduct { wty: self.ty, layout: self.layout, w: &self.data, rows: self.rows, y }
    }

    /// Adds the bias, if any, to every row of `y` (`[m, rows]`).
    pub(crate) fn add_bias(&self, y: &mut [f32]) {
        if let Some(b) = &self.bias {
            ops::add_bias_rows(y, b);
        }
    }

    /// [`Linear::forward`] of rows stacked from several sequences (`spans`,
    /// contiguous, covering `x`), such that each row's result is the same
    /// bits as when its sequence runs alone. Block-quantized weights give
    /// that for any batch (each row's dot products are independent of the
    /// others'), and so do FP8 weights, so all rows go in one product that
    /// reads the weights once.
    /// Float weights use a different kernel for one row than for several,
    /// so they run sequence by sequence, except when every sequence brings
    /// one row (decode): then `matvec_many` reads the weights once and gives
    /// each row the bits of its own matvec.
    pub fn forward_spans(&self, x: &[f32], spans: &[std::ops::Range<usize>], threads: usize) -> Vec<f32> {
        let m = spans.last().map_or(0, |s| s.end);
        if spans.len() <= 1 || !matches!(self.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return self.forward(x, m, threads);
        }
        if spans.iter().all(|s| s.len() == 1) {
            let mut y = vec![0f32; m * self.rows];
            whale_kernels::matvec_many(self.ty, &self.data, self.rows, self.cols, x, m, &mut y, threads);
            self.add_bias(&mut y);
            return y;
        }
        let mut y = Vec::with_capacity(m * self.rows);
        for s in spans {
            y.extend(self.forward(&x[s.start * self.cols..s.end * self.cols], s.len(), threads));
        }
        y
    }

    /// [`Linear::forward_spans`] of several matrices that read the same
    /// input (Q/K/V, gate/up): when all are block-quantized they run as one
    /// job of the worker pool, with the activations quantized once per type
    /// (same bits as one by one).
    pub fn forward_spans_many(
        lins: &[&Linear],
        x: &[f32],
        spans: &[std::ops::Range<usize>],
        threads: usize,
    ) -> Vec<Vec<f32>> {
        let Some(first) = lins.first() else { return Vec::new() };
        if !lins.iter().all(|l| l.integer_kernels()) || lins.iter().any(|l| l.cols != first.cols) {
            return lins.iter().map(|l| l.forward_spans(x, spans, threads)).collect();
        }
        let m = spans.last().map_or(0, |s| s.end);
        let mut ys: Vec<Vec<f32>> = lins.iter().map(|l| vec![0f32; m * l.rows]).collect();
        let mut products: Vec<whale_kernels::QProduct<'_>> =
            lins.iter().zip(ys.iter_mut()).map(|(l, y)| l.product(y)).collect();
        whale_kernels::matmul_q_many(&mut products, first.cols, x, m, threads);
        drop(products);
        for (l, y) in lins.iter().zip(ys.iter_mut()) {
            l.add_bias(y);
        }
        ys
    }

    /// `down(silu(gate x) · up x)` of rows stacked from `spans` (as
    /// [`Linear::forward_spans`]; `x`: `[n, hidden]`). Where all three
    /// matrices are block-quantized, each row's result does not depend on
    /// the others', and the rows go [`FFN_PIECE_ROWS`] at a time, so that
    /// a prefill chunk's `[n, ff]` gate and up outputs are never held
    /// whole (512 tokens of Qwen2.5-0.5B: 2 × 10 MB; of DeepSeek-V2-Lite's
    /// dense layer: 2 × 22 MB), unless the three matrices take more bytes
    /// than those outputs would: each piece reads the weights again, and
    /// V3's dense layer (238 MB of Q4_K_M weights against 75 MB of
    /// outputs) prefilled 5 % slower in pieces. Float weights keep each
    /// span whole (their kernels' bits are those of the whole span).
    pub fn swiglu_ffn(
        gate: &Linear,
        up: &Linear,
        down: &Linear,
        x: &[f32],
        spans: &[std::ops::Range<usize>],
        threads: usize,
    ) -> Vec<f32> {
        let n = spans.last().map_or(0, |s| s.end);
        let piece = |x: &[f32], spans: &[std::ops::Range<usize>]| {
            // Gate and up read the same input: one product, activations quantized once.
            let [mut g, u]: [Vec<f32>; 2] =
                Linear::forward_spans_many(&[gate, up], x, spans, threads).try_into().expect("two products");
            ops::swiglu(&mut g, &u);
            drop(u);
            down.forward_spans(&g, spans, threads)
        };
        let outputs = (2 * n * gate.rows * std::mem::size_of::<f32>()) as u64;
        let weights = gate.bytes() + up.bytes() + down.bytes();
        if n <= FFN_PIECE_ROWS || weights > outputs || ![gate, up, down].iter().all(|l| l.integer_kernels()) {
            return piece(x, spans);
        }
        let mut y = Vec::with_capacity(n * down.rows);
        for start in (0..n).step_by(FFN_PIECE_ROWS) {
            let end = (start + FFN_PIECE_ROWS).min(n);
            let rows = 0..end - start;
            y.extend(piece(&x[start * gate.cols..end * gate.cols], std::slice::from_ref(&rows)));
        }
        y
    }

    /// [`Linear::forward_spans`] of several matrices, each of its own input
    /// and rows (`xs[i]`: `[m_i, lins[i].cols]` stacked from `spans[i]`),
    /// such as MLA's per-head up-projections or the routed experts of a
    /// prefill: when all are block-quantized they run as one job of the
    /// worker pool (same bits as one by one).
    pub fn forward_each(
        lins: &[&Linear],
        xs: &[&[f32]],
        spans: &[&[std::ops::Range<usize>]],
        threads: usize,
    ) -> Vec<Vec<f32>> {
        assert!(lins.len() == xs.len() && xs.len() == spans.len(), "forward_each: one input and span list per matrix");
        if !lins.iter().all(|l| l.integer_kernels()) {
            return lins.iter().zip(xs).zip(spans).map(|((l, x), sp)| l.forward_spans(x, sp, threads)).collect();
        }
        let ms: Vec<usize> = spans.iter().map(|sp| sp.last().map_or(0, |s| s.end)).collect();
        let mut ys: Vec<Vec<f32>> = lins.iter().zip(&ms).map(|(l, &m)| vec![0f32; m * l.rows]).collect();
        let mut products: Vec<whale_kernels::QProductOwn<'_>> = lins
            .iter()
            .zip(xs)
            .zip(&ms)
            .zip(ys.iter_mut())
            .map(|(((l, x), &m), y)| whale_kernels::QProductOwn {
                wty: l.ty,
                layout: l.layout,
                w: &l.data,
                rows: l.rows,
                cols: l.cols,
                m,
                x,
                y,
            })
            .collect();
        whale_kernels::matmul_q_each(&mut products, threads);
        drop(products);
        for (l, y) in lins.iter().zip(ys.iter_mut()) {
            l.add_bias(y);
        }
        ys
    }

    /// Bytes of the weight matrix as held in memory (FP8: with the scales
    /// of its rows).
    pub fn bytes(&self) -> u64 {
        let block = whale_kernels::fp8::BLOCK;
        let scales = self.fp8.as_ref().map_or(0, |_| self.rows.div_ceil(block) * self.cols.div_ceil(block) * 4);
        (self.data.len() + scales) as u64
    }

    /// Row `r` dequantized (an embedding lookup). `out`: `[cols]`.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        if let Some(w) = self.fp8_matrix() {
            return w.dequantize_row(r, out);
        }
        let rb = self.ty.row_bytes(self.cols).expect("shape checked at load");
        if self.layout == Layout::X8 {
            let mut row = vec![0u8; rb];
            whale_kernels::x8::row_in_file_layout(self.ty, self.cols, &self.data, r, &mut row)
                .expect("an interleaved matrix holds whole groups of rows");
            return whale_kernels::dequantize_row(self.ty, &row, out).expect("shape checked at load");
        }
        whale_kernels::dequantize_row(self.ty, &self.data[r * rb..(r + 1) * rb], out).expect("shape checked at load");
    }
}

/// Look up the embedding rows of `tokens`: `[n_tok, hidden]`.
pub fn embed_tokens(embed: &Linear, tokens: &[u32]) -> Result<Vec<f32>, ModelError> {
    let h = embed.cols;
    let mut x = vec![0f32; tokens.len() * h];
    for (t, &id) in tokens.iter().enumerate() {
        if id as usize >= embed.rows {
            return Err(ModelError::TokenOutOfRange { id, vocab: embed.rows });
        }
        embed.row(id as usize, &mut x[t * h..(t + 1) * h]);
    }
    Ok(x)
}

/// Final RMSNorm and output projection of the hidden states `x`
/// (`[n_tok, hidden]`), for the last row or all rows: `[m, vocab]`.
pub fn final_logits(x: &[f32], logits: Logits, norm: &[f32], eps: f32, output: &Linear, threads: usize) -> Vec<f32> {
    let n = x.len() / norm.len();
    let mut out = batch_logits(x, &batch_spans([n]), logits, norm, eps, output, threads);
    out.pop().expect("one sequence")
}

/// [`final_logits`] for the stacked rows of a batch: per sequence (`spans`)
/// its last row's logits or all of its rows', each the same bits as for
/// that sequence alone.
pub fn batch_logits(
    x: &[f32],
    spans: &[std::ops::Range<usize>],
    logits: Logits,
    norm: &[f32],
    eps: f32,
    output: &Linear,
    threads: usize,
) -> Vec<Vec<f32>> {
    batch_logits_each(x, spans, &vec![logits; spans.len()], norm, eps, output, threads)
}

/// [`batch_logits`] with each sequence's own choice of rows (`which[i]`).
pub fn batch_logits_each(
    x: &[f32],
    spans: &[std::ops::Range<usize>],
    which: &[Logits],
    norm: &[f32],
    eps: f32,
    output: &Linear,
    threads: usize,
) -> Vec<Vec<f32>> {
    let h = norm.len();
    let picked: Vec<std::ops::Range<usize>> = spans
        .iter()
        .zip(which)
        .map(|(s, w)| match w {
            Logits::Last => s.end - 1..s.end,
            Logits::All => s.clone(),
        })
        .collect();
    let mut rows: Vec<f32> = picked.iter().flat_map(|r| x[r.start * h..r.end * h].iter().copied()).collect();
    let out_spans = batch_spans(picked.iter().map(|r| r.len()));
    ops::rms_norm_rows(&mut rows, norm, eps);
    let y = output.forward_spans(&rows, &out_spans, threads);
    if let [_] = out_spans[..] {
        // One sequence (a decode's usual case): its logits are all of `y`,
        // not a copy (129280 floats of DeepSeek's vocabulary a token).
        return vec![y];
    }
    let vocab = output.rows;
    out_spans.iter().map(|s| y[s.start * vocab..s.end * vocab].to_vec()).collect()
}

/// The token embedding `[vocab, hidden]` and the output projection, which is
/// the embedding itself when the file has none (tied embeddings).
pub fn load_embed_output(store: &WeightStore, vocab: usize, h: usize) -> Result<(Linear, Linear), ModelError> {
    let embed = Linear::from_view(store.get(&names::name(names::TOKEN_EMBD), &[vocab, h])?, None);
    let output = match store.optional(&names::name(names::OUTPUT), &[vocab, h])? {
        Some(t) => Linear::from_view(t, None),
        None => embed.clone(),
    };
    Ok((embed, output))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q8_0 matrix of pseudo-random quants (every block's scale 2^-6).
    fn q8_0(rows: usize, cols: usize, seed: u64) -> Linear {
        let mut s = seed | 1;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut bytes = Vec::new();
        for _ in 0..rows * cols / 32 {
            bytes.extend_from_slice(&0x2400u16.to_le_bytes());
            bytes.extend((0..32).map(|_| next() as u8));
        }
        let data = ByteSlice::from_vec(bytes);
        Linear { ty: GgmlType::Q8_0, rows, cols, data, layout: Layout::File, bias: None, fp8: None }
    }

    #[test]
    fn swiglu_ffn_in_pieces_gives_the_bits_of_all_rows_at_once() {
        let (hidden, ff, n) = (64, 96, 2 * FFN_PIECE_ROWS + 45);
        let (gate, up, down) = (q8_0(ff, hidden, 1), q8_0(ff, hidden, 2), q8_0(hidden, ff, 3));
        let x: Vec<f32> = (0..n * hidden).map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0).collect();
        let all = 0..n;
        for spans in [std::slice::from_ref(&all).to_vec(), vec![0..100, 100..n]] {
            let [mut g, u]: [Vec<f32>; 2] =
                Linear::forward_spans_many(&[&gate, &up], &x, &spans, 2).try_into().expect("two products");
            ops::swiglu(&mut g, &u);
            let whole = down.forward_spans(&g, &spans, 2);
            let pieces = Linear::swiglu_ffn(&gate, &up, &down, &x, &spans, 2);
            assert_eq!(pieces.len(), n * hidden);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pieces), bits(&whole), "spans {spans:?}");
            assert!(whole.iter().any(|&v| v != 0.0), "a product of nonzero weights and inputs");
        }
    }
}
