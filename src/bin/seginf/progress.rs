//! Progress bars on stderr, hidden when stderr is not a terminal or with `--quiet`.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting to `len` (`0` = a spinner with a count), labelled `what`.
pub fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        0 => (
            ProgressBar::new_spinner(),
            "{spinner} {prefix} {pos} {msg} [{elapsed}]",
        ),
        _ => (
            ProgressBar::new(len),
            "{prefix} [{bar:32}] {pos}/{len} {msg} [{elapsed}, eta {eta}]",
        ),
    };
    // The templates are constants; the default style is a harmless fallback.
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar
}
