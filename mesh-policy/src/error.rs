//! Policy errors: each names the file, line and column, so an operator can
//! go straight to the fix; a load reports all of them at once.

use std::fmt;

/// One problem in one policy file. `line` and `column` are 1-based; both are
/// 0 when the problem is with the file as a whole (it cannot be read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Located(file, *line, *column, message))]
pub struct PolicyError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// `file:line:col: message`, or `file: message` when there is no line.
struct Located<'a>(&'a str, usize, usize, &'a str);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Located(file, line, column, message) = *self;
        if line == 0 {
            write!(f, "{file}: {message}")
        } else {
            write!(f, "{file}:{line}:{column}: {message}")
        }
    }
}

/// All problems found by one load, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.0))]
pub struct PolicyErrors(pub Vec<PolicyError>);

/// One error per line, no trailing newline.
struct Lines<'a>(&'a [PolicyError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}
