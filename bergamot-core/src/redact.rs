//! The one redactor for secrets in connection strings: every crate prints a
//! backend URL (logs, errors, `Debug`) through [`url`].

/// `url` with its password replaced by `***`: `scheme://user:***@host/...`.
/// A key-value connection string (`host=db password=x`) that names a
/// password is replaced as a whole; anything else is returned unchanged.
pub fn url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let (authority, tail) = match rest.find(['/', '?', '#']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            if let Some((user, _)) = userinfo.split_once(':') {
                return format!("{scheme}://{user}:***@{host}{tail}");
            }
        }
        if !tail.to_ascii_lowercase().contains("password") {
            return url.to_string();
        }
    }
    if url.to_ascii_lowercase().contains("password") {
        return "<connection string with a password>".to_string();
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_never_survive() {
        assert_eq!(
            url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(
            url("amqp://guest:p@ss@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
        assert_eq!(url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(url("memory"), "memory");
        assert!(!url("host=h password=secret").contains("secret"));
        assert!(!url("postgres://h/db?password=secret").contains("secret"));
    }
}
