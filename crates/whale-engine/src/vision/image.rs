//! Image bytes in and out: decoding what users send, Janus's preprocessing,
//! and PNG encoding of generated pictures.
//!
//! Preprocessing is transformers' `JanusImageProcessor` (its PIL backend):
//! scale so the long side is 384 (`round` halves to even, as Python does;
//! the short side at least `min_size`) with PIL's bicubic filter, pad to a
//! square centred on the short axis with the background colour
//! (`int(mean · 255)`, 127 for Janus-Pro), then `(p / 255 − mean) / std`
//! per channel. The resampling follows PIL's algorithm for 8-bit images:
//! separable passes (horizontal first), a bicubic kernel (a = −0.5)
//! stretched by the downscale factor, weights normalised and rounded to
//! 22-bit fixed point, each pass rounded back to 8 bits; so its pixels are
//! PIL's exactly.

use std::io::Cursor;

use crate::vision::VisionError;

/// The most pixels an image may have (checked from its header, before any
/// decoding): 40 megapixels, more than any camera photo people send, and a
/// bound on what one request can make the server allocate.
pub const MAX_PIXELS: u64 = 40_000_000;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

fn check_size(width: u64, height: u64) -> Result<(), VisionError> {
    let pixels = width * height;
    if pixels > MAX_PIXELS {
        return Err(VisionError::TooManyPixels { width, height, pixels, limit: MAX_PIXELS });
    }
    if pixels == 0 {
        return Err(VisionError::BadImage("the image has no pixels".into()));
    }
    Ok(())
}

/// Decode PNG or JPEG bytes to RGB (alpha dropped, grey replicated, as
/// PIL's `convert("RGB")` does).
pub fn decode(bytes: &[u8]) -> Result<Rgb8, VisionError> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes)
    } else {
        Err(VisionError::UnknownFormat { magic: bytes.iter().take(8).copied().collect() })
    }
}

fn decode_png(bytes: &[u8]) -> Result<Rgb8, VisionError> {
    let bad = |e: png::DecodingError| VisionError::BadImage(format!("PNG: {e}"));
    // The size from IHDR, which must come first, before the decoder reads on.
    if bytes.len() >= 24 && &bytes[12..16] == b"IHDR" {
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes")) as u64;
        check_size(be(16), be(20))?;
    }
    let mut dec = png::Decoder::new_with_limits(Cursor::new(bytes), png::Limits { bytes: 4 * MAX_PIXELS as usize });
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(bad)?;
    let (w, h) = (reader.info().width as u64, reader.info().height as u64);
    check_size(w, h)?;
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(bad)?;
    let (w, h) = (w as usize, h as usize);
    let px = &buf[..frame.buffer_size()];
    let data: Vec<u8> = match frame.color_type {
        png::ColorType::Rgb => px.to_vec(),
        png::ColorType::Rgba => px.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => px.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => px.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        png::ColorType::Indexed => return Err(VisionError::BadImage("PNG: palette was not expanded".into())),
    };
    if data.len() != w * h * 3 {
        return Err(VisionError::BadImage(format!("PNG: {} bytes of pixels for {w}x{h}", data.len())));
    }
    Ok(Rgb8 { width: w, height: h, data })
}

fn decode_jpeg(bytes: &[u8]) -> Result<Rgb8, VisionError> {
    let bad = |e: jpeg_decoder::Error| VisionError::BadImage(format!("JPEG: {e}"));
    let mut dec = jpeg_decoder::Decoder::new(Cursor::new(bytes));
    dec.read_info().map_err(bad)?;
    let info = dec.info().ok_or_else(|| VisionError::BadImage("JPEG: no frame header".into()))?;
    check_size(info.width as u64, info.height as u64)?;
    dec.set_max_decoding_buffer_size(4 * MAX_PIXELS as usize);
    let px = dec.decode().map_err(bad)?;
    let (w, h) = (info.width as usize, info.height as usize);
    let data: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => px,
        jpeg_decoder::PixelFormat::L8 => px.iter().flat_map(|&g| [g, g, g]).collect(),
        jpeg_decoder::PixelFormat::L16 => px.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        jpeg_decoder::PixelFormat::CMYK32 => {
            return Err(VisionError::BadImage("JPEG: CMYK images are not supported; save it as RGB".into()))
        }
    };
    if data.len() != w * h * 3 {
        return Err(VisionError::BadImage(format!("JPEG: {} bytes of pixels for {w}x{h}", data.len())));
    }
    Ok(Rgb8 { width: w, height: h, data })
}

/// Encode RGB pixels as a PNG file.
pub fn encode_png(img: &Rgb8) -> Result<Vec<u8>, VisionError> {
    let mut out = Vec::new();
    let bad = |e: png::EncodingError| VisionError::BadImage(format!("PNG encoding: {e}"));
    let mut enc = png::Encoder::new(&mut out, img.width as u32, img.height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(bad)?;
    w.write_image_data(&img.data).map_err(bad)?;
    w.finish().map_err(bad)?;
    Ok(out)
}

/// Janus's preprocessing settings (`preprocessor_config.json`).
#[derive(Clone, Debug)]
pub struct Preprocess {
    pub size: usize,
    pub min_size: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Default for Preprocess {
    /// Janus-Pro's published values.
    fn default() -> Self {
        Preprocess { size: 384, min_size: 14, mean: [0.5; 3], std: [0.5; 3] }
    }
}

impl Preprocess {
    /// From a `preprocessor_config.json` (missing keys keep Janus-Pro's values).
    pub fn from_json(v: &serde_json::Value, size: usize) -> Preprocess {
        let mut p = Preprocess { size, ..Default::default() };
        let triple = |k: &str| -> Option<[f32; 3]> {
            let a = v.get(k)?.as_array()?;
            (a.len() == 3).then(|| [0, 1, 2].map(|i| a[i].as_f64().unwrap_or(0.5) as f32))
        };
        if let Some(m) = triple("image_mean") {
            p.mean = m;
        }
        if let Some(s) = triple("image_std").filter(|s| s.iter().all(|&x| x > 0.0)) {
            p.std = s;
        }
        if let Some(m) = v.get("min_size").and_then(|m| m.as_u64()) {
            p.min_size = (m as usize).clamp(1, size);
        }
        p
    }

    /// The padding colour: `int(mean · 255)` per channel.
    pub fn background(&self) -> [u8; 3] {
        self.mean.map(|m| (m as f64 * 255.0).clamp(0.0, 255.0) as u8)
    }

    /// The size the long side is scaled to and the short side's, as
    /// transformers computes them (`round` halves to even).
    pub fn resized_dims(&self, width: usize, height: usize) -> (usize, usize) {
        let delta = self.size as f64 / width.max(height) as f64;
        let r = |n: usize| ((n as f64 * delta).round_ties_even() as usize).max(self.min_size);
        (r(width), r(height))
    }

    /// An image → the vision encoder's input, `[3, size, size]` channel-first.
    pub fn pixel_values(&self, img: &Rgb8) -> Vec<f32> {
        let (w, h) = self.resized_dims(img.width, img.height);
        let resized = resize_bicubic(img, w, h);
        let s = self.size;
        let bg = self.background();
        let mut square = vec![0u8; s * s * 3];
        for px in square.chunks_exact_mut(3) {
            px.copy_from_slice(&bg);
        }
        let (x0, y0) = if w >= h { (0, (s - h.min(s)) / 2) } else { ((s - w.min(s)) / 2, 0) };
        for y in 0..h.min(s) {
            let row = &resized.data[y * w * 3..][..w.min(s) * 3];
            square[((y0 + y) * s + x0) * 3..][..row.len()].copy_from_slice(row);
        }
        let mut out = vec![0f32; 3 * s * s];
        for (p, px) in square.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let v = px[c] as f64 / 255.0;
                out[c * s * s + p] = ((v - self.mean[c] as f64) / self.std[c] as f64) as f32;
            }
        }
        out
    }
}

/// Generated pixels (`[h, w, 3]`, about −1 to 1) to 8-bit RGB as
/// transformers' `postprocess` does, roundings included: `(x + 1) / 2` in
/// f32, times 255 in f64 stored as f32, clipped to [0, 255] and truncated.
pub fn to_rgb8(pixels: &[f32], width: usize, height: usize) -> Rgb8 {
    let byte = |x: f32| {
        let unit = (x + 1.0) / 2.0;
        (((unit as f64) * 255.0) as f32).clamp(0.0, 255.0) as u8
    };
    let data = pixels.iter().map(|&x| byte(x)).collect();
    Rgb8 { width, height, data }
}

/// PIL's bicubic kernel (a = −0.5).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel along one axis: its first input pixel and its
/// fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i64>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let ws: Vec<f64> =
                (xmin..xmax.max(xmin)).map(|x| bicubic((x as f64 - center + 0.5) * (1.0 / filterscale))).collect();
            let total: f64 = ws.iter().sum();
            let k = ws
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    (w * (1u64 << PRECISION_BITS) as f64 + if w < 0.0 { -0.5 } else { 0.5 }) as i64
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resize with PIL's bicubic filter, bit for bit (horizontal pass, then vertical).
pub fn resize_bicubic(img: &Rgb8, out_w: usize, out_h: usize) -> Rgb8 {
    let (w, h) = (img.width, img.height);
    let horizontal = if out_w == w {
        img.data.clone()
    } else {
        let cx = coefficients(w, out_w);
        let mut t = vec![0u8; h * out_w * 3];
        for y in 0..h {
            for (x, (x0, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (i, &kk) in k.iter().enumerate() {
                        ss += img.data[(y * w + x0 + i) * 3 + c] as i64 * kk;
                    }
                    t[(y * out_w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        t
    };
    if out_h == h {
        return Rgb8 { width: out_w, height: h, data: horizontal };
    }
    let cy = coefficients(h, out_h);
    let mut out = vec![0u8; out_h * out_w * 3];
    for (y, (y0, k)) in cy.iter().enumerate() {
        for x in 0..out_w * 3 {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (i, &kk) in k.iter().enumerate() {
                ss += horizontal[(y0 + i) * out_w * 3 + x] as i64 * kk;
            }
            out[y * out_w * 3 + x] = clip8(ss);
        }
    }
    Rgb8 { width: out_w, height: out_h, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_header_is_refused_before_decoding() {
        // A valid PNG signature and IHDR claiming 100000 × 100000 pixels, no data.
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = b"IHDR".to_vec();
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend(100_000u32.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        png.extend(13u32.to_be_bytes());
        png.extend(&ihdr);
        png.extend(crc32(&ihdr).to_be_bytes());
        let e = decode(&png).unwrap_err();
        assert!(matches!(e, VisionError::TooManyPixels { pixels: 10_000_000_000, .. }), "{e}");
    }

    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn round_trip_and_resize_to_the_same_size_is_the_identity() {
        let img = Rgb8 { width: 5, height: 3, data: (0..45).map(|i| (i * 37 % 256) as u8).collect() };
        let back = decode(&encode_png(&img).unwrap()).unwrap();
        assert_eq!(back, img);
        assert_eq!(resize_bicubic(&img, 5, 3), img);
        // Scale 1 through the filter is the identity too (weights 1, 0, 0).
        let k = coefficients(7, 7);
        assert!(k.iter().all(|(_, w)| w.iter().filter(|&&v| v != 0).count() == 1));
    }

    #[test]
    fn dims_round_half_to_even_like_python() {
        let p = Preprocess::default();
        assert_eq!(p.resized_dims(300, 225), (384, 288));
        // 384 · 5 / 768 = 2.5 → 2 (even), but min_size lifts it to 14.
        assert_eq!(p.resized_dims(768, 5), (384, 14));
        assert_eq!(p.resized_dims(768, 29), (384, 14)); // 14.5 → 14
        assert_eq!(p.resized_dims(768, 31), (384, 16)); // 15.5 → 16
    }
}
