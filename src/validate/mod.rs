//! Validation through tract (filled in by the validate work).
