//! Platform cfg aliases, so each target list is spelled once:
//! - `kqueue_os`: the BSDs and Apple systems (kqueue poller, pipe waker);
//! - `epoll_os`: Linux (epoll poller, eventfd waker);
//! - `sock_flags_os`: socket(2)/accept4(2) take SOCK_NONBLOCK|SOCK_CLOEXEC and send(2)
//!   takes MSG_NOSIGNAL (elsewhere fcntl and SO_NOSIGPIPE do that job).

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(kqueue_os)");
    println!("cargo::rustc-check-cfg=cfg(epoll_os)");
    println!("cargo::rustc-check-cfg=cfg(sock_flags_os)");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let os = os.as_str();
    let kqueue = matches!(
        os,
        "macos" | "ios" | "freebsd" | "openbsd" | "netbsd" | "dragonfly"
    );
    if kqueue {
        println!("cargo::rustc-cfg=kqueue_os");
    }
    if os == "linux" {
        println!("cargo::rustc-cfg=epoll_os");
    }
    if os == "linux" || (kqueue && !matches!(os, "macos" | "ios")) {
        println!("cargo::rustc-cfg=sock_flags_os");
    }
}
