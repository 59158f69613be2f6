//! The request parser never panics, whatever arrives, and never accepts
//! what the specification refuses.

use proptest::prelude::*;
use twistor_protocols::gemini::{parse_request_line, Status, Titan, MAX_REQUEST};

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..1200)) {
        if let Ok(Some(line)) = parse_request_line(&data) {
            // What is accepted is a CRLF-terminated line within the limit.
            prop_assert!(line.consumed <= MAX_REQUEST + 2);
            prop_assert_eq!(&data[line.consumed - 2..line.consumed], b"\r\n");
            prop_assert!(line.url.fragment().is_none());
            prop_assert!(line.url.username().is_empty());
        }
    }

    #[test]
    fn url_like_input_never_panics(
        scheme in "(gemini|GEMINI|titan|https|)",
        sep in "(://|:|//|:///)",
        host in "[a-zA-Z0-9.\\-\\[\\]:@%éü]{0,40}",
        path in "[a-zA-Z0-9/%.?#;=&+ \\t\\-]{0,60}",
        end in "(\r\n|\n|\r|)",
    ) {
        let input = format!("{scheme}{sep}{host}{path}{end}");
        match parse_request_line(input.as_bytes()) {
            Ok(Some(line)) => {
                prop_assert!(end == "\r\n");
                prop_assert!(line.path.starts_with('/'));
            }
            Ok(None) => prop_assert!(end.is_empty() || end == "\r"),
            Err(r) => prop_assert_eq!(r.status, Status::BadRequest),
        }
    }

    #[test]
    fn titan_parameters_never_panic(
        path in "[a-z/;=%.]{0,20}",
        params in proptest::collection::vec("(size|mime|token|edit|x)(=[0-9a-z/%;+\\-]{0,12})?", 0..5),
    ) {
        let joined = params.join(";");
        let _ = Titan::parse(&joined);
        let input = format!("titan://h/{path};{joined}\r\n");
        match parse_request_line(input.as_bytes()) {
            Ok(Some(line)) => {
                let titan = line.titan.expect("a titan line has parameters");
                prop_assert!(!titan.mime.is_empty());
                // The parameters were split off the path.
                prop_assert!(line.path.starts_with('/'));
                prop_assert!(line.raw_path.len() + "titan://h;size=".len() + 2 <= input.len());
            }
            Ok(None) => prop_assert!(false, "a complete line"),
            Err(r) => prop_assert_eq!(r.status, Status::BadRequest),
        }
    }

    #[test]
    fn split_anywhere_gives_the_same_answer(cut in 0usize..40) {
        let full = b"gemini://example.org/a%20b?q\r\n";
        let cut = cut.min(full.len());
        // A prefix is incomplete (never refused), the whole is accepted.
        if cut < full.len() {
            prop_assert_eq!(parse_request_line(&full[..cut]).unwrap(), None);
        }
        prop_assert!(parse_request_line(full).unwrap().is_some());
    }
}
