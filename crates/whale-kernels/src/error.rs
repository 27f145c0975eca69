//! The error type of the fallible entry points.

use crate::types::GgmlType;

/// Why a kernel refused its input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelError {
    /// `elements` is a multiple of the block size but `bytes` is not the
    /// matching encoded size (`ty.row_bytes(elements)`).
    BadLength { ty: GgmlType, elements: usize, bytes: usize },
    /// `elements` is not a whole number of `ty` blocks.
    NotBlockMultiple { ty: GgmlType, elements: usize },
    /// `ty` is not an activation type (Q8_0, Q8_1, Q8_K, F16, BF16, F32).
    NotActivationType { ty: GgmlType },
    /// `ty` has no interleaved layout (`crate::x8::supports`).
    NotInterleaved { ty: GgmlType },
    /// An interleaved matrix's row count is not a multiple of `x8::ROWS`.
    RowsNotGrouped { rows: usize },
}

impl core::fmt::Display for KernelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            KernelError::BadLength { ty, elements, bytes } => {
                let expected = ty.row_bytes(elements).unwrap_or(0);
                write!(f, "{ty}: {elements} elements need {expected} bytes, got {bytes}")
            }
            KernelError::NotBlockMultiple { ty, elements } => {
                write!(f, "{ty}: {elements} elements is not a multiple of the block size {}", ty.block_size())
            }
            KernelError::NotActivationType { ty } => write!(f, "{ty} is not an activation type"),
            KernelError::NotInterleaved { ty } => write!(f, "{ty} has no interleaved layout"),
            KernelError::RowsNotGrouped { rows } => {
                write!(f, "{rows} rows is not a multiple of the {} rows an interleaved group holds", crate::x8::ROWS)
            }
        }
    }
}

impl std::error::Error for KernelError {}
