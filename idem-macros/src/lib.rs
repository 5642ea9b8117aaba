//! Procedural macros for idem; users reach them through `idem_runtime`.
