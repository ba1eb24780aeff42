//! Rebuilds the kernel programs when bpf-linker changes, says how to get it when missing, and
//! tells bpf-linker to expand memory builtins inline.

fn main() {
    match which::which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }

    // Without this, bpf-linker exports compiler_builtins' memset/memcpy/memmove, which copy a
    // byte per loop turn, and LLVM calls them for every struct it zeroes or copies: 200 and
    // more instructions a packet. Refusing them makes LLVM expand each one into stores.
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("bpf") {
        println!("cargo:rustc-link-arg-bins=--disable-memory-builtins");
        println!("cargo:rustc-link-arg-bins=--disable-expand-memcpy-in-order");
        println!("cargo:rustc-link-arg-bins=--cpu-features=+allows-misaligned-mem-access");
    }
}
