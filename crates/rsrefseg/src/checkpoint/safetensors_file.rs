//! safetensors → host f32 tensors.

use super::{HostTensor, LoadError, TensorMap};
use safetensors::{Dtype, SafeTensors};

/// Decode every tensor of a safetensors file to f32 (f16, bf16, f64 and integer tensors are
/// converted; integer buffers such as BatchNorm's `num_batches_tracked` keep their value).
pub fn read(bytes: &[u8], origin: &str) -> Result<TensorMap, LoadError> {
    read_with(bytes, origin, |_| {})
}

/// [`read`], calling `done(bytes)` with each tensor's stored bytes once they are decoded.
fn read_with(bytes: &[u8], origin: &str, mut done: impl FnMut(&[u8])) -> Result<TensorMap, LoadError> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| LoadError::format(origin, format!("not a valid safetensors file: {e}")))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let data = decode(view.dtype(), view.data())
            .ok_or_else(|| LoadError::format(origin, format!("tensor {name}: unsupported dtype {:?}", view.dtype())))?;
        let shape = view.shape().to_vec();
        if shape.iter().product::<usize>() != data.len() {
            return Err(LoadError::format(origin, format!("tensor {name}: shape {shape:?} does not match its data")));
        }
        done(view.data());
        out.insert(name, HostTensor::new(shape, data));
    }
    Ok(out)
}

/// [`read`] on a file, memory-mapped: the pages of each tensor are handed back to the kernel as
/// soon as it is decoded, so reading needs the decoded tensors' memory, not also the file's.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_file(file: &std::fs::File, origin: &str) -> Result<TensorMap, LoadError> {
    // SAFETY: the mapping is read-only and private to this call; a file truncated by another
    // process meanwhile would fault, as reading any file being rewritten would be wrong anyway.
    let map = unsafe { memmap2::Mmap::map(file) }
        .map_err(|e| LoadError::format(origin, format!("cannot map the file: {e}")))?;
    let base = map.as_ptr() as usize;
    let page = 4096;
    read_with(&map, origin, |bytes| {
        // Whole pages inside this tensor's bytes only (neighbours may still be needed).
        let start = (bytes.as_ptr() as usize - base).div_ceil(page) * page;
        let end = ((bytes.as_ptr() as usize - base) + bytes.len()) / page * page;
        if end > start {
            // SAFETY: DONTNEED on a read-only file mapping only drops resident pages; a later
            // read of them would re-read the file. These bytes are not read again.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    })
}

/// Little-endian buffer of `dtype` → f32 values; `None` for dtypes that are not numbers.
pub fn decode(dtype: Dtype, b: &[u8]) -> Option<Vec<f32>> {
    macro_rules! le {
        ($t:ty, $n:expr) => {
            b.chunks_exact($n).map(|c| <$t>::from_le_bytes(c.try_into().unwrap()) as f32).collect()
        };
    }
    Some(match dtype {
        Dtype::F32 => le!(f32, 4),
        Dtype::F64 => le!(f64, 8),
        Dtype::F16 => b.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16))
            .collect(),
        Dtype::I64 => le!(i64, 8),
        Dtype::I32 => le!(i32, 4),
        Dtype::I16 => le!(i16, 2),
        Dtype::I8 => b.iter().map(|&v| v as i8 as f32).collect(),
        Dtype::U8 => b.iter().map(|&v| v as f32).collect(),
        Dtype::BOOL => b.iter().map(|&v| (v != 0) as u8 as f32).collect(),
        _ => return None,
    })
}

/// IEEE half → single precision (subnormals, infinities and NaN included).
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, f) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut f = f;
            while f & 0x400 == 0 {
                f <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((f & 0x3ff) << 13)
        }
        (0x1f, f) => sign | 0x7f80_0000 | (f << 13),
        (e, f) => sign | ((e + 127 - 15) << 23) | (f << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::f16_to_f32;

    #[test]
    fn half_precision_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x3555), 0.33325195);
        assert_eq!(f16_to_f32(0x0001), 5.9604645e-8);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
    }
}
