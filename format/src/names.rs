//! The one grammar of dataset and version names, shared by the files that record them, the
//! builder that writes them and the store whose paths they become.

/// Longest dataset or version name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// Checks a dataset or version name: 1 to [`MAX_NAME_LEN`] ASCII letters, digits, `.`, `_`
/// or `-`, starting with a letter or digit (so it is a safe path segment everywhere and never
/// a hidden one). On failure, says what a name must be.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', starting with \
             a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar() {
        for good in ["v1", "20261127T031500Z", "a.b_c-d", "0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        for bad in ["", "_rc1", "-x", ".hidden", "a/b", "é", " a", long.as_str()] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
