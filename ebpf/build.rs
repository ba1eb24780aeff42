//! Rebuilds the kernel programs when bpf-linker changes, and says how to get it when missing.

fn main() {
    match which::which("bpf-linker") {
        Ok(linker) => println!("cargo:rerun-if-changed={}", linker.display()),
        Err(_) => println!("cargo:warning=bpf-linker not found: run `cargo xtask setup`"),
    }
}
