//! SigLIP(2) towers
