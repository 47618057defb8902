//! The mlua binding (filled in below).
