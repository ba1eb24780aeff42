//! portguard's kernel programs: the XDP ingress guard, the tcx egress recorder of the host's own
//! UDP flows, and a pass-only XDP program that benchmarks measure the guard against.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod guard;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this: a panic path in the guard is a
    // load failure, never a run-time one.
    loop {}
}

/// Built for the host (`cargo build --workspace`, clippy), this crate has nothing to run.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
