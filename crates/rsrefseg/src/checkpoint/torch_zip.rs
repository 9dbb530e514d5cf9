//! PyTorch `torch.save` zip archives (e.g. `sam2.1_hiera_*.pt`) read without executing pickled code.
//! (Implemented in a follow-up commit.)

use super::{LoadError, TensorMap};

pub fn read(_bytes: &[u8], origin: &str) -> Result<TensorMap, LoadError> {
    Err(LoadError::format(origin, "torch zip archives are not supported yet"))
}
