//! The Targets table each part of the report ends with (the performance
//! targets mesh holds itself to): its header and its verdict column; each
//! part writes its rows.
use super::*;

/// The `### Targets` heading and the table's header.
pub(super) fn write_header(d: &mut String) {
    let _ = writeln!(d, "### Targets\n");
    let _ = writeln!(d, "| target | measured | |");
    let _ = writeln!(d, "|---|---|---|");
}

/// The last column: whether the target was met; `None` when the
/// measurement it needs could not be made.
pub(super) fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_and_verdicts() {
        let mut d = String::new();
        write_header(&mut d);
        assert_eq!(d, "### Targets\n\n| target | measured | |\n|---|---|---|\n");
        assert_eq!(verdict(Some(true)), "met");
        assert_eq!(verdict(Some(false)), "**not met**");
        assert_eq!(verdict(None), "not measured");
    }
}
