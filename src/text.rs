//! Small wording helpers shared by every layer that writes text for people.

/// `n` followed by `noun`, in the plural unless `n` is one: `count(1, "request")` is `1 request`,
/// `count(2, "request")` is `2 requests`.
pub fn count(n: impl Into<u64>, noun: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_and_everything_else_plural() {
        assert_eq!(count(1u64, "request"), "1 request");
        assert_eq!(count(0u64, "request"), "0 requests");
        assert_eq!(count(2u32, "free request"), "2 free requests");
    }
}
