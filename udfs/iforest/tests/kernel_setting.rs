//! `TXGUARD_FOREST_KERNEL`: a name that is not a kernel stops loading a model with a message
//! that lists the choices. Its own test binary: the variable is read once per process.

use txguard_iforest::{Forest, KERNEL_ENV};

#[test]
fn an_unknown_kernel_name_fails_the_load_naming_the_choices() {
    // SAFETY: the only test in this binary; nothing else reads the environment meanwhile.
    unsafe { std::env::set_var(KERNEL_ENV, "avx1024") };
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/default.json");
    let e = Forest::load(model).expect_err("unknown kernel").to_string();
    assert_eq!(
        e,
        "TXGUARD_FOREST_KERNEL=\"avx1024\" is not a scoring kernel; use auto or one of portable, \
         avx512-ranks, avx512-ranks16, avx512-permute, avx512-gather, avx512-gather-values, avx512-gather-splits"
    );
}
