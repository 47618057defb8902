//! Keeping this shared library mapped for the life of the process.
//!
//! A host interpreter `dlclose`s a C module when the Lua state that loaded it closes.
//! Once services run, worker and timer threads execute code of this library; unmapping
//! it under them would crash the process at its very end. `pin_self` re-opens the
//! library with `RTLD_NODELETE` (a reference never released), so it stays mapped.

use std::sync::Once;

/// Make the library containing this function impossible to unload (once; best effort:
/// a static build or a failed lookup changes nothing).
pub fn pin_self() {
    static PIN: Once = Once::new();
    PIN.call_once(|| {
        // SAFETY: `info` is a plain C struct filled by dladdr; the address is that of a
        // function of this library. dli_fname, when non-null, is a NUL-terminated path
        // owned by the loader, valid while the library is loaded (it is: we are in it).
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let addr = pin_self as *const () as *const libc::c_void;
            if libc::dladdr(addr, &mut info) == 0 || info.dli_fname.is_null() {
                return;
            }
            // The handle is deliberately leaked: it is the reference that pins.
            let _ = libc::dlopen(info.dli_fname, libc::RTLD_NOW | libc::RTLD_NODELETE);
        }
    });
}
