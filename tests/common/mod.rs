//! Helpers shared by the end-to-end tests.

/// Fashion-MNIST is required in CI (`.ci/run` installs it and sets `CI`); elsewhere its absence
/// skips the test with a message.
pub fn have_fashion_mnist() -> bool {
    match mnv4_lab::data::locate_fashion_mnist(None) {
        Ok(_) => true,
        Err(e) if std::env::var_os("CI").is_none() => {
            println!("skipped: {e}");
            false
        }
        Err(e) => panic!("CI needs Fashion-MNIST: {e}"),
    }
}
