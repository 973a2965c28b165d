//! `pil ref key` and `pil ref derive`: purely local (run here with no stack.env, no AWS
//! variables, only the key), the fixed vector, the stdin mode, and what is refused.

use crate::common;
use common::pil_text;

/// The key bytes 0, 1, …, 31. The refs were computed independently with Python's standard
/// library: `hmac.new(bytes(range(32)), pms_id.encode("utf-8"), hashlib.sha256).digest()[:16].hex()`.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
/// The same key as standard, padded base64.
const KEY_STD: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const VECTORS: [(&str, &str); 5] = [
    ("12345", "36e295174c2947fbba5ff2d280b635a4"),
    ("004821377", "c66876be728ac71864c0d3e29d31c7ee"),
    (
        "Zo\u{eb}-\u{d1}\u{fa}\u{f1}ez/7",
        "83d1c3a374dbb3fae009a08401c1eaf5",
    ),
    ("  AB 12  ", "6567a21f90acf866c4b8a4c715814e97"),
    ("pat:00042", "1d7e72b73e4354bf3469c705c8423310"),
];

fn lines(refs: &[String]) -> String {
    refs.iter().map(|r| format!("{r}\n")).collect()
}

#[test]
fn derive_matches_the_fixed_vector() {
    let ids: Vec<&str> = VECTORS.iter().map(|(id, _)| *id).collect();
    let hex: Vec<String> = VECTORS.iter().map(|(_, h)| (*h).to_owned()).collect();
    let env = [("PIL_REF_KEY", KEY)];

    let mut args = vec!["ref", "derive"];
    args.extend(&ids);
    let (ok, out, err) = pil_text(&env, &args, b"");
    assert!(ok, "{err}");
    assert_eq!(out, lines(&hex));

    // With a prefix, and with the key in its standard base64 spelling.
    let mut args = vec!["ref", "derive", "--prefix", "p"];
    args.extend(&ids);
    let (ok, out, err) = pil_text(&[("PIL_REF_KEY", KEY_STD)], &args, b"");
    assert!(ok, "{err}");
    let prefixed: Vec<String> = hex.iter().map(|h| format!("p_{h}")).collect();
    assert_eq!(out, lines(&prefixed));

    // From a key file (with its line end), as JSON.
    let dir = std::env::temp_dir().join(format!("pil-refs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("ref.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let path = key_file.display().to_string();
    let mut args = vec![
        "ref",
        "derive",
        "--json",
        "--prefix",
        "a",
        "--key-file",
        &path,
    ];
    args.extend(&ids);
    let (ok, out, err) = pil_text(&[], &args, b"");
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let expected: Vec<serde_json::Value> = VECTORS
        .iter()
        .map(|(id, h)| serde_json::json!({"pms_id": id, "ref": format!("a_{h}")}))
        .collect();
    assert_eq!(json, serde_json::Value::Array(expected));
    let _ = std::fs::remove_dir_all(&dir);

    // Every ref is one the receiver's parser accepts.
    for r in prefixed.iter().chain(&hex) {
        assert!(shared::ids::OpaqueRef::parse(r).is_ok(), "{r}");
    }
}

#[test]
fn stdin_mode_reads_one_id_per_line() {
    let env = [("PIL_REF_KEY", KEY)];
    let input: String = VECTORS.iter().map(|(id, _)| format!("{id}\n")).collect();
    let (ok, out, err) = pil_text(&env, &["ref", "derive", "--prefix", "p"], input.as_bytes());
    assert!(ok, "{err}");
    let expected: Vec<String> = VECTORS.iter().map(|(_, h)| format!("p_{h}")).collect();
    assert_eq!(out, lines(&expected));
    // The last line needs no line end; the JSON form pairs each id with its ref.
    let (ok, out, err) = pil_text(
        &env,
        &["ref", "derive", "--json"],
        input.trim_end_matches('\n').as_bytes(),
    );
    assert!(ok, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(VECTORS.len()));
    assert_eq!(json[2]["pms_id"], VECTORS[2].0);
    assert_eq!(json[3]["ref"], VECTORS[3].1);
    // Nothing on stdin: no refs (an empty array with --json).
    let (ok, out, _) = pil_text(&env, &["ref", "derive"], b"");
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = pil_text(&env, &["ref", "derive", "--json"], b"");
    assert!(
        ok && serde_json::from_str::<serde_json::Value>(&out).unwrap() == serde_json::json!([])
    );

    // A line that is not an id: refused, the line named, never its content.
    for (input, rule) in [
        (&b"12345\r\n"[..], "carriage return"),
        (b"12345\n\n67890\n", "empty"),
        (b"12345\n\xff\xfe\n", "UTF-8"),
    ] {
        let (ok, _, err) = pil_text(&env, &["ref", "derive"], input);
        assert!(
            !ok && err.contains("stdin line") && err.contains(rule),
            "{err}"
        );
        assert!(!err.contains("12345"), "{err}");
    }
}

#[test]
fn bad_keys_are_refused_without_echoing_them() {
    let short = "c2hvcnQtcmVmLWtl"; // 16 characters, 12 bytes
    // (environment, the key as given, what the error says)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            &[("PIL_REF_KEY", short)],
            short,
            "PIL_REF_KEY: the ref key is 12 bytes; a ref key is at least 16",
        ),
        (
            &[("PIL_REF_KEY", "p@ssw0rd-p@ssw0rd-p@ssw0rd")],
            "p@ssw0rd",
            "PIL_REF_KEY: the ref key is not base64url",
        ),
        (
            &[],
            "",
            "no ref key: pass --key-file PATH or set PIL_REF_KEY",
        ),
        (&[("PIL_REF_KEY", "")], "", "no ref key"),
    ];
    for (env, key, rule) in cases {
        let (ok, out, err) = pil_text(env, &["ref", "derive", "12345"], b"");
        assert!(!ok && out.is_empty(), "{out}");
        assert!(err.contains(rule), "{err}");
        assert!(
            key.is_empty() || !err.contains(key),
            "the key is echoed: {err}"
        );
    }
    // A key file that is too short, a missing one, one given with PIL_REF_KEY set too.
    let dir = std::env::temp_dir().join(format!("pil-refs-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("short.key");
    std::fs::write(&file, format!("{short}\n")).unwrap();
    let path = file.display().to_string();
    let (ok, _, err) = pil_text(&[], &["ref", "derive", "--key-file", &path, "x"], b"");
    assert!(
        !ok && err.contains("--key-file: the ref key is 12 bytes"),
        "{err}"
    );
    assert!(!err.contains(short), "{err}");
    let missing = dir.join("missing.key").display().to_string();
    let (ok, _, err) = pil_text(&[], &["ref", "derive", "--key-file", &missing, "x"], b"");
    assert!(!ok && err.contains("--key-file: reading"), "{err}");
    let (ok, _, err) = pil_text(
        &[("PIL_REF_KEY", KEY)],
        &["ref", "derive", "--key-file", &path, "x"],
        b"",
    );
    assert!(!ok && err.contains("PIL_REF_KEY is set too"), "{err}");
    assert!(!err.contains(KEY) && !err.contains(short), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    // There is no flag that takes the key itself.
    let (ok, _, err) = pil_text(&[], &["ref", "derive", "--key", KEY, "x"], b"");
    assert!(!ok && err.contains("--key") && !err.contains(KEY), "{err}");
}

#[test]
fn prefixes_are_validated() {
    let env = [("PIL_REF_KEY", KEY)];
    for ok_prefix in ["p", "a", "appt", "abcdefgh"] {
        let (ok, out, err) = pil_text(
            &env,
            &["ref", "derive", "--prefix", ok_prefix, "12345"],
            b"",
        );
        assert!(ok, "{err}");
        assert_eq!(out, format!("{ok_prefix}_{}\n", VECTORS[0].1));
    }
    for (bad, rule) in [
        ("P", "1-8 lowercase letters"),
        ("p_", "1-8 lowercase letters"),
        ("p1", "1-8 lowercase letters"),
        ("abcdefghi", "1-8 lowercase letters"),
        ("", "1-8 lowercase letters"),
        ("pt", "record-number label"),
        ("mrn", "record-number label"),
    ] {
        let (ok, out, err) = pil_text(&env, &["ref", "derive", "--prefix", bad, "12345"], b"");
        assert!(!ok && out.is_empty(), "{bad}: {out}");
        assert!(
            err.contains("--prefix") && err.contains(rule),
            "{bad}: {err}"
        );
    }
}

#[test]
fn key_prints_a_fresh_key_and_a_warning() {
    let (ok, out, err) = pil_text(&[], &["ref", "key"], b"");
    assert!(ok, "{err}");
    let key = out.strip_suffix('\n').unwrap();
    assert_eq!(key.len(), 43);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert!(shared::refkey::RefKey::parse(key).is_ok());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("secret") && !err.contains(key), "{err}");
    let (_, again, _) = pil_text(&[], &["ref", "key"], b"");
    assert_ne!(again, out);
    // The printed key works as is.
    let (ok, out, err) = pil_text(&[("PIL_REF_KEY", key)], &["ref", "derive", "x"], b"");
    assert!(ok && out.len() == 33, "{err}");
}
