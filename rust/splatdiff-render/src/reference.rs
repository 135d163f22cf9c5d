//! CPU reference of the forward and backward passes (written by the reference helper).
