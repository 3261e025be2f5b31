//! Sealing and opening a datagram, the key file's format and its reload.

use ring::rand::SystemRandom;

use super::*;

/// A key file line: 32 bytes of `b`, in base64.
fn key_line(b: u8) -> String {
    base64::engine::general_purpose::STANDARD.encode([b; KEY_BYTES])
}

fn keys(bytes: &[u8]) -> GossipKeys {
    let text: Vec<String> = bytes.iter().map(|b| key_line(*b)).collect();
    GossipKeys::parse(&text.join("\n")).expect("valid keys")
}

fn seal(keys: &GossipKeys, cluster: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    keys.seal(
        &ClusterAad::new(cluster),
        plaintext,
        &SystemRandom::new(),
        &mut out,
    )
    .expect("seals");
    out
}

fn open(keys: &GossipKeys, cluster: &str, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
    let mut out = Vec::new();
    keys.open(&ClusterAad::new(cluster), datagram, &mut out)
        .map(|()| out)
}

const MESSAGE: &[u8] = b"a chitchat datagram, or any bytes";

#[test]
fn a_sealed_datagram_opens_with_its_key_and_cluster_name() {
    let k = keys(&[1]);
    let sealed = seal(&k, "prod", MESSAGE);
    assert_eq!(sealed.len(), MESSAGE.len() + SEAL_OVERHEAD);
    assert_eq!(sealed[0], SEALED_FORMAT);
    // The message does not travel in the clear.
    assert!(!sealed.windows(MESSAGE.len()).any(|w| w == MESSAGE));
    assert_eq!(open(&k, "prod", &sealed).as_deref(), Ok(MESSAGE));
    // A fresh nonce each time: the same message never seals to the same bytes.
    assert_ne!(seal(&k, "prod", MESSAGE), sealed);
    // An empty datagram seals and opens too.
    assert_eq!(
        open(&k, "prod", &seal(&k, "prod", b"")).as_deref(),
        Ok(&b""[..])
    );
}

#[test]
fn another_key_or_cluster_name_does_not_open_it() {
    let sealed = seal(&keys(&[1]), "prod", MESSAGE);
    assert_eq!(
        open(&keys(&[2]), "prod", &sealed),
        Err(DropReason::Unopened)
    );
    assert_eq!(
        open(&keys(&[1]), "prod2", &sealed),
        Err(DropReason::Unopened)
    );
    assert_eq!(open(&keys(&[1]), "pro", &sealed), Err(DropReason::Unopened));
}

#[test]
fn a_truncated_or_altered_datagram_does_not_open() {
    let k = keys(&[1]);
    let sealed = seal(&k, "prod", MESSAGE);
    for len in 0..sealed.len() {
        let got = open(&k, "prod", &sealed[..len]);
        let want = if len < SEAL_OVERHEAD {
            DropReason::Garbage
        } else {
            DropReason::Unopened
        };
        assert_eq!(got, Err(want), "cut to {len} bytes");
    }
    for i in 1..sealed.len() {
        let mut altered = sealed.clone();
        altered[i] ^= 0x40;
        assert_eq!(
            open(&k, "prod", &altered),
            Err(DropReason::Unopened),
            "byte {i} altered"
        );
    }
    // Appended bytes change where the tag is read from.
    let mut longer = sealed.clone();
    longer.push(0);
    assert_eq!(open(&k, "prod", &longer), Err(DropReason::Unopened));
}

#[test]
fn what_is_not_sealed_is_told_apart() {
    let k = keys(&[1]);
    // A plain chitchat datagram (its magic number first): a node without the key.
    let mut plain = CHITCHAT_MAGIC.to_vec();
    plain.extend_from_slice(&[0, 3]);
    assert_eq!(open(&k, "prod", &plain), Err(DropReason::Unsealed));
    assert_eq!(open(&k, "prod", b""), Err(DropReason::Garbage));
    assert_eq!(open(&k, "prod", &[0x7f; 100]), Err(DropReason::Garbage));
    // Another format byte, even with a valid seal behind it, is not opened.
    let mut sealed = seal(&k, "prod", MESSAGE);
    sealed[0] = 2;
    assert_eq!(open(&k, "prod", &sealed), Err(DropReason::Garbage));
}

#[test]
fn every_key_opens_and_the_first_seals_through_a_rotation() {
    // The three steps of a rotation from key 1 to key 2, and a node at each.
    let before = keys(&[1]);
    let added = keys(&[1, 2]);
    let moved = keys(&[2, 1]);
    let after = keys(&[2]);
    let steps = [&before, &added, &moved, &after];
    // The first key seals: a node that added key 2 still seals with key 1.
    assert_eq!(
        open(&before, "c", &seal(&added, "c", MESSAGE)).as_deref(),
        Ok(MESSAGE)
    );
    assert_eq!(
        open(&after, "c", &seal(&moved, "c", MESSAGE)).as_deref(),
        Ok(MESSAGE)
    );
    assert_eq!(
        open(&before, "c", &seal(&moved, "c", MESSAGE)),
        Err(DropReason::Unopened)
    );
    // Nodes one step apart (a step rolled out node by node) understand each other both ways;
    // two steps apart they may not, which is why each step reaches every node first.
    for pair in steps.windows(2) {
        for (from, to) in [(pair[0], pair[1]), (pair[1], pair[0])] {
            let sealed = seal(from, "c", MESSAGE);
            assert_eq!(
                open(to, "c", &sealed).as_deref(),
                Ok(MESSAGE),
                "{from:?} -> {to:?}"
            );
        }
    }
    assert_eq!(
        open(&after, "c", &seal(&before, "c", MESSAGE)),
        Err(DropReason::Unopened)
    );
}

#[test]
fn a_datagram_too_large_to_seal_is_refused() {
    let k = keys(&[1]);
    let mut out = Vec::new();
    let rng = SystemRandom::new();
    let aad = ClusterAad::new("c");
    let largest = vec![7u8; MAX_PLAINTEXT];
    k.seal(&aad, &largest, &rng, &mut out).expect("fits");
    assert_eq!(out.len(), MAX_DATAGRAM);
    assert_eq!(
        k.seal(&aad, &vec![7u8; MAX_PLAINTEXT + 1], &rng, &mut out),
        Err(SealError::Oversize)
    );
}

#[test]
fn the_key_file_format() {
    let two = format!(
        "# rotation in progress\n\n  {}  \n# old key\n{}\n",
        key_line(2),
        key_line(1)
    );
    let k = GossipKeys::parse(&two).expect("comments, blank lines and spaces are fine");
    assert_eq!(k.ids().len(), 2);
    // The file's order is kept: the first key seals.
    assert_eq!(k.ids()[0], keys(&[2]).ids()[0]);
    assert_ne!(k.ids()[0], k.ids()[1]);
    // Fingerprints are short and do not show the key.
    assert_eq!(k.ids()[0].len(), 8);
    assert!(!format!("{k:?}").contains(&key_line(2)));

    let err = |text: &str| GossipKeys::parse(text).expect_err(text);
    assert!(err("").contains("no key"), "{}", err(""));
    assert!(err("# only a comment\n\n").contains("no key"));
    assert!(err(&format!("{}\nnot base64!\n", key_line(1))).contains("line 2 is not base64"));
    let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
    let e = err(&short);
    assert!(e.contains("line 1 decodes to 16 bytes, a key is 32"), "{e}");
    assert!(e.contains("head -c 32 /dev/urandom | base64"), "{e}");
    // An error never shows the line's content (it may be a key).
    assert!(!e.contains(&short));
    let many: Vec<String> = (0..=MAX_KEYS as u8).map(key_line).collect();
    assert!(err(&many.join("\n")).contains("more than 8 keys"));
}

#[test]
fn loading_names_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gossip.keys");
    let missing = GossipKeyFile::load(&path).expect_err("no file");
    assert!(missing.contains("gossip.keys"), "{missing}");
    std::fs::write(&path, "not base64!\n").expect("write");
    let bad = GossipKeyFile::load(&path).expect_err("bad file");
    assert!(bad.contains("gossip.keys: line 1 is not base64"), "{bad}");
    std::fs::write(&path, vec![b'#'; 70_000]).expect("write");
    let big = GossipKeyFile::load(&path).expect_err("too big");
    assert!(big.contains("not a key file"), "{big}");
    std::fs::write(&path, key_line(1)).expect("write");
    let file = GossipKeyFile::load(&path).expect("good file");
    assert_eq!(file.keys.load().ids(), keys(&[1]).ids());
}

#[test]
fn the_key_file_is_re_read_and_a_bad_version_keeps_the_keys() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gossip.keys");
    std::fs::write(&path, key_line(1)).expect("write");
    let file = GossipKeyFile::load(&path).expect("good file");
    let mut watch = KeyFileWatch::new(file.clone());
    let in_use = || {
        file.keys
            .load()
            .ids()
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    let ids = |k: GossipKeys| k.ids().iter().map(|s| s.to_string()).collect::<Vec<_>>();

    assert_eq!(watch.check(), KeyFileCheck::Unchanged);
    std::fs::write(&path, format!("{}\n{}\n", key_line(1), key_line(2))).expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Reloaded);
    assert_eq!(in_use(), ids(keys(&[1, 2])));
    // Reordered, same length: seen although only the order changed.
    std::fs::write(&path, format!("{}\n{}\n", key_line(2), key_line(1))).expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Reloaded);
    assert_eq!(in_use(), ids(keys(&[2, 1])));
    assert_eq!(watch.check(), KeyFileCheck::Unchanged);

    // A bad version keeps the keys, and is reported once, not at every look.
    std::fs::write(&path, "garbage\n").expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Refused);
    assert_eq!(watch.check(), KeyFileCheck::Unchanged);
    assert_eq!(in_use(), ids(keys(&[2, 1])));
    // So does a missing file, and an emptied one.
    std::fs::remove_file(&path).expect("remove");
    assert_eq!(watch.check(), KeyFileCheck::Refused);
    assert_eq!(watch.check(), KeyFileCheck::Unchanged);
    std::fs::write(&path, "# emptied by mistake\n").expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Refused);
    assert_eq!(in_use(), ids(keys(&[2, 1])));
    // A good version after them is taken.
    std::fs::write(&path, key_line(2)).expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Reloaded);
    assert_eq!(in_use(), ids(keys(&[2])));
    // Going back to a version refused earlier is reported again.
    std::fs::write(&path, "garbage\n").expect("write");
    assert_eq!(watch.check(), KeyFileCheck::Refused);
}
