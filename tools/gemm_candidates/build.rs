// The system OpenBLAS (Debian's libopenblas-dev, built with runtime kernel dispatch).
fn main() {
    println!("cargo:rustc-link-lib=openblas");
}
