//! Hostile input files: every malformed or misfitting `.npy` / `.pb` / labels file / input folder given to
//! `validate` and `evaluate` exits 3 (malformed) or 2 (does not fit the model, wrong count, empty folder) with
//! the file named and a reason that cannot come from the path; nothing panics. Then thousands of truncations and
//! bit flips of a valid `.npy` and `.pb` through the library readers, the fuzz target's entry point over a
//! deterministic random corpus, and crafted models that load but must not make our own code panic.
//!
//! The files are generated here (deterministically) into a temp folder under `target/`.

mod common;

use std::path::{Path, PathBuf};

use common::cli;
use onnx_rewrite::ir::builder::{model, GraphBuilder};
use onnx_rewrite::ir::{Attribute, DataType, Tensor};
use onnx_rewrite::validate::{self, npy};

/// The trained digits classifier: input `image` f32[N,1,8,8], output `logits` f32[N,10].
fn digits() -> PathBuf {
    common::root().join("fixtures/digits/digits_cnn.onnx")
}

// ---- writing test files ---------------------------------------------------------------------------------

/// An .npy (format 1.0) with this header text and data.
fn npy_v1(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// An .npy (format 3.0, UTF-8 header) with this header text and data.
fn npy_v3(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = b"\x93NUMPY\x03\x00".to_vec();
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn header(descr: &str, fortran: bool, shape: &str) -> String {
    let f = if fortran { "True" } else { "False" };
    format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}\n")
}

fn f32_bytes(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 / 64.0).to_le_bytes())
        .collect()
}

/// A minimal protobuf writer for `TensorProto` (field numbers from onnx.proto).
#[derive(Default)]
struct Pb(Vec<u8>);

impl Pb {
    fn varint(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    fn int(mut self, field: u32, v: i64) -> Pb {
        self.varint((field << 3) as u64);
        self.varint(v as u64);
        self
    }
    fn bytes(mut self, field: u32, b: &[u8]) -> Pb {
        self.varint(((field << 3) | 2) as u64);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// TensorProto fields: dims 1, data_type 2, int32_data 5, name 8, raw_data 9, external_data 13,
/// data_location 14.
fn tensor_pb(name: &str, dtype: i32, dims: &[i64], raw: Option<&[u8]>) -> Pb {
    let mut p = Pb::default().bytes(8, name.as_bytes()).int(2, dtype as i64);
    for d in dims {
        p = p.int(1, *d);
    }
    if let Some(r) = raw {
        p = p.bytes(9, r);
    }
    p
}

struct Case {
    /// File (or folder) name; it appears in the error message.
    name: &'static str,
    /// Exit code: 3 malformed, 2 does not fit / usage.
    code: i32,
    /// Part of the message that names the reason (must not come from the path).
    reason: &'static str,
}

/// Run the CLI and check exit code, file named, reason given, no panic. Returns a failure description.
fn check(args: &[&str], named: &Path, case: &Case) -> Option<String> {
    let (code, _, stderr) = cli(args);
    let file = named.file_name().unwrap().to_string_lossy().to_string();
    // The reason must come from the message, not from the path: remove every mention of the path first.
    let without_path = stderr
        .replace(&named.display().to_string(), "<path>")
        .replace(&file, "<file>");
    let ok = code == case.code
        && stderr.contains(&file)
        && without_path.contains(case.reason)
        && !stderr.contains("panicked")
        && !stderr.contains("RUST_BACKTRACE");
    (!ok).then(|| {
        format!(
            "{} ({}): exit {code} (want {}), reason {:?}, stderr: {stderr}",
            case.name,
            args.join(" "),
            case.code,
            case.reason
        )
    })
}

// ---- tensor files given with --input ------------------------------------------------------------------------

/// Malformed tensor files: exit 3 naming the file.
fn malformed_files(dir: &Path) -> Vec<(Case, Vec<u8>)> {
    let good_shape = "(1, 1, 8, 8)";
    let data = f32_bytes(64);
    let f = |descr: &str, shape: &str| header(descr, false, shape);
    let mut v: Vec<(Case, Vec<u8>)> = vec![
        (c("n01_empty.npy", 3, "magic"), vec![]),
        (
            c("n02_wrong_magic.npy", 3, "not an .npy file"),
            b"PK\x03\x04 zip, not npy".to_vec(),
        ),
        (
            c("n03_cut_in_version.npy", 3, "version"),
            b"\x93NUMPY\x01".to_vec(),
        ),
        (
            c("n04_version_9.npy", 3, "version 9.0"),
            b"\x93NUMPY\x09\x00\x04\x00{}  ".to_vec(),
        ),
        (
            c("n05_header_past_end.npy", 3, "truncated"),
            b"\x93NUMPY\x01\x00\xff\x7f{'descr'".to_vec(),
        ),
        (
            c(
                "n06_header_not_dict.npy",
                3,
                "not a valid numpy header dict",
            ),
            npy_v1("descr=<f4 shape=(1,1,8,8)\n", &data),
        ),
        (
            c("n07_header_unclosed.npy", 3, "header ends"),
            npy_v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8)",
                &data,
            ),
        ),
        (
            c("n08_header_garbage_after.npy", 3, "end of the header"),
            npy_v1(
                &format!("{}__import__('os')", f("<f4", good_shape).trim_end()),
                &data,
            ),
        ),
        (
            c("n09_header_unknown_key.npy", 3, "unexpected key"),
            npy_v1(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 8, 8), 'x': 'y'}",
                &data,
            ),
        ),
        (
            c("n10_header_no_shape.npy", 3, "no 'shape'"),
            npy_v1("{'descr': '<f4', 'fortran_order': False}", &data),
        ),
        (
            c("n11_header_not_ascii.npy", 3, "not ASCII"),
            npy_v1(&f("\u{e9}f4", good_shape), &data),
        ),
        (
            c("n12_descr_non_ascii_v3.npy", 3, "unsupported dtype"),
            npy_v3(&f("\u{e9}f4", good_shape), &data),
        ),
        (
            c("n13_descr_emoji_v3.npy", 3, "unsupported dtype"),
            npy_v3(&f("<\u{1F600}", good_shape), &data),
        ),
        (
            c("n14_descr_complex.npy", 3, "unsupported dtype"),
            npy_v1(&f("<c8", good_shape), &f32_bytes(128)),
        ),
        (
            c("n15_descr_empty.npy", 3, "unsupported dtype"),
            npy_v1(&f("", good_shape), &data),
        ),
        (
            c("n16_object_array.npy", 3, "object array"),
            npy_v1(&f("|O", "(1,)"), b"\x80\x04N.\x00\x00\x00\x00"),
        ),
        (
            c("n17_structured.npy", 3, "structured dtype"),
            npy_v1(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
                &[0; 4],
            ),
        ),
        (
            c("n18_big_endian.npy", 3, "little-endian"),
            npy_v1(&f(">f4", good_shape), &data),
        ),
        (
            // Fortran order is read (as numpy reads it), but its data is checked as C order's is
            c("n19_fortran_truncated.npy", 3, "truncated"),
            npy_v1(
                &header("<f4", true, "(2, 1, 4, 8)"),
                &data[..data.len() - 4],
            ),
        ),
        (
            c("n20_negative_dim.npy", 3, "negative dimension"),
            npy_v1(&f("<f4", "(1, 1, -8, -8)"), &data),
        ),
        (
            c("n21_terabytes.npy", 3, "truncated"),
            npy_v1(&f("<f4", "(1000000, 1, 1000000, 8)"), &data),
        ),
        (
            c("n22_overflow.npy", 3, "overflows"),
            npy_v1(&f("<f4", "(4294967296, 1, 4294967296, 8)"), &data),
        ),
        (
            c("n23_dim_too_big.npy", 3, "64 bits"),
            npy_v1(&f("<f4", "(1, 1, 99999999999999999999, 8)"), &data),
        ),
        (
            c("n24_data_truncated.npy", 3, "truncated"),
            npy_v1(&f("<f4", good_shape), &data[..255]),
        ),
        (
            c("n25_data_trailing.npy", 3, "trailing bytes"),
            npy_v1(&f("<f4", good_shape), &[&data[..], &[0u8; 3]].concat()),
        ),
        (
            c("n26_bool_byte_7.npy", 3, "bool element 3"),
            npy_v1(&f("|b1", good_shape), &{
                let mut b = vec![0u8; 64];
                b[3] = 7;
                b
            }),
        ),
        (
            c("n27_escape_in_string.npy", 3, "escape"),
            npy_v1(&f("<f4\\x00", good_shape), &data),
        ),
        // .pb (TensorProto)
        (c("p01_empty.pb", 3, "empty"), vec![]),
        (
            c("p02_not_protobuf.pb", 3, "failed to decode"),
            b"\x0f\x0f\x0fnot a protobuf".to_vec(),
        ),
        (
            c("p03_raw_data_short.pb", 3, "raw_data is 100 bytes"),
            tensor_pb("image", 1, &[1, 1, 8, 8], Some(&data[..100])).0,
        ),
        (
            c("p04_negative_dim.pb", 3, "negative dim"),
            tensor_pb("image", 1, &[1, 1, -8, 8], Some(&data)).0,
        ),
        (
            c("p05_terabytes.pb", 3, "elements"),
            tensor_pb("image", 1, &[1 << 20, 1, 1 << 20, 8], Some(&data)).0,
        ),
        (
            c("p06_unknown_dtype.pb", 3, "unknown data_type 999"),
            tensor_pb("image", 999, &[1, 1, 8, 8], Some(&data)).0,
        ),
        (
            c("p07_string_dtype.pb", 3, "input files must hold numbers"),
            tensor_pb("image", 8, &[1], None).bytes(6, b"hello").0,
        ),
        (
            c("p08_external.pb", 3, "external data is not read"),
            tensor_pb("image", 1, &[1, 1, 8, 8], None)
                .int(14, 1)
                .bytes(
                    13,
                    &Pb::default()
                        .bytes(1, b"location")
                        .bytes(2, b"/etc/passwd")
                        .0,
                )
                .0,
        ),
        (
            c("p09_bool_int32_7.pb", 3, "outside the range of bool"),
            tensor_pb("image", 9, &[2], None).bytes(5, &[1, 7]).0,
        ),
        (
            c("p10_bool_raw_2.pb", 3, "bool element 1"),
            tensor_pb("image", 9, &[2], Some(&[0, 2])).0,
        ),
        (
            c("p11_two_data_fields.pb", 3, "more than one data field"),
            tensor_pb("image", 1, &[1], Some(&[0; 4]))
                .bytes(4, &1f32.to_le_bytes())
                .0,
        ),
        (c("p12_cut_in_half.pb", 3, "failed to decode"), {
            let b = tensor_pb("image", 1, &[1, 1, 8, 8], Some(&data)).0;
            b[..b.len() / 2].to_vec()
        }),
    ];
    // A .pb with a deeply nested unknown group is refused by prost's recursion limit, not by a stack overflow.
    let mut deep = Vec::new();
    for _ in 0..200 {
        deep.push((15 << 3) | 3); // start group, field 15
    }
    v.push((c("p13_deep_nesting.pb", 3, "failed to decode"), deep));
    let _ = dir;
    v
}

fn c(name: &'static str, code: i32, reason: &'static str) -> Case {
    Case { name, code, reason }
}

#[test]
fn malformed_tensor_files_exit_3_naming_the_file() {
    let dir = common::tempdir();
    let model = digits();
    let m = model.to_str().unwrap();
    let mut failures = Vec::new();
    let cases = malformed_files(dir.path());
    assert!(cases.len() >= 35, "{} cases", cases.len());
    for (case, bytes) in &cases {
        let p = dir.path().join(case.name);
        std::fs::write(&p, bytes).unwrap();
        let ps = p.to_str().unwrap();
        // Through the library: an Invalid error naming the file, never the drift code.
        match validate::read_tensor_file(&p) {
            Ok(_) => failures.push(format!("{}: read_tensor_file accepted it", case.name)),
            Err(e) => {
                if e.exit_code() != 3 || !e.to_string().contains(case.name) {
                    failures.push(format!("{}: library error {e:?}", case.name));
                }
            }
        }
        for args in [
            vec!["validate", m, m, "--input", ps],
            vec!["evaluate", m, "--latency", "0", "--input", ps],
        ] {
            failures.extend(check(&args, &p, case));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Well-formed files that do not fit the model or a folder that holds no sample: exit 2 naming the file.
#[test]
fn misfitting_inputs_and_folders_exit_2_naming_the_file() {
    let dir = common::tempdir();
    let d = dir.path();
    let model = digits();
    let m = model.to_str().unwrap();
    let img = |shape: &str, n: usize| npy_v1(&header("<f4", false, shape), &f32_bytes(n));
    let write = |rel: &str, bytes: &[u8]| {
        let p = d.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let good = write("good/image.npy", &img("(2, 1, 8, 8)", 128));
    let mut failures = Vec::new();
    // Control: the good file runs (exit 0), so every failure below is about the file.
    let (code, _, stderr) = cli(&["validate", m, m, "--input", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");

    // (case, paths given to --input, path the message must name)
    let f64_image = write(
        "u01_f64.npy",
        &npy_v1(&header("<f8", false, "(1, 1, 8, 8)"), &[0; 512]),
    );
    let wrong_shape = write("u02_shape_8x9.npy", &img("(1, 1, 8, 9)", 72));
    let wrong_rank = write("u03_rank_2.npy", &img("(1, 64)", 64));
    let i64_pb = write(
        "u04_int64.pb",
        &tensor_pb("image", 7, &[1, 1, 8, 8], Some(&[0; 512])).0,
    );
    let extra = write("u05_two_files/image.npy", &img("(1, 1, 8, 8)", 64));
    let extra2 = write("u05_two_files/u05_extra.npy", &img("(1, 1, 8, 8)", 64));
    let unknown = write("u06_unknown_name.npy", &img("(1, 1, 8, 8)", 64));
    let empty_dir = d.join("u07_empty_folder");
    std::fs::create_dir_all(&empty_dir).unwrap();
    let text_only = d.join("u08_text_only");
    write("u08_text_only/README.txt", b"no tensors here");
    let mixed = d.join("u09_mixed");
    write("u09_mixed/image.npy", &img("(1, 1, 8, 8)", 64));
    write("u09_mixed/s0/image.npy", &img("(1, 1, 8, 8)", 64));
    let empty_sample = d.join("u10_samples/s1");
    write("u10_samples/s0/image.npy", &img("(1, 1, 8, 8)", 64));
    std::fs::create_dir_all(&empty_sample).unwrap();
    let txt = write("u11_values.txt", b"1 2 3");
    let sub_shape = write("u12_samples/s1/image.npy", &img("(1, 1, 4, 4)", 16));
    write("u12_samples/s0/image.npy", &img("(1, 1, 8, 8)", 64));
    let dir_among_files = d.join("u13_folder_and_file");
    write("u13_folder_and_file/image.npy", &img("(1, 1, 8, 8)", 64));
    let missing = d.join("u14_missing.npy");

    let cases: Vec<(Case, Vec<&Path>, &Path)> = vec![
        (
            c("u01", 2, "holds f64 but input 'image' is f32"),
            vec![&f64_image],
            &f64_image,
        ),
        (
            c("u02", 2, "does not fit input 'image'"),
            vec![&wrong_shape],
            &wrong_shape,
        ),
        (
            c("u03", 2, "does not fit input 'image'"),
            vec![&wrong_rank],
            &wrong_rank,
        ),
        (
            c("u04", 2, "holds i64 but input 'image' is f32"),
            vec![&i64_pb],
            &i64_pb,
        ),
        (
            c("u05", 2, "matches no input"),
            vec![&extra, &extra2],
            &extra2,
        ),
        (
            c("u06", 2, "matches no input"),
            vec![&good, &unknown],
            &unknown,
        ),
        (
            c("u07", 2, "holds no .npy or .pb files"),
            vec![&empty_dir],
            &empty_dir,
        ),
        (
            c("u08", 2, "holds no .npy or .pb files"),
            vec![&text_only],
            &text_only,
        ),
        (
            c("u09", 2, "both sample sub-folders and tensor files"),
            vec![&mixed],
            &mixed,
        ),
        (
            c("u10", 2, "holds no .npy or .pb files"),
            vec![empty_sample.parent().unwrap()],
            &empty_sample,
        ),
        (c("u11", 2, "must be .npy or .pb"), vec![&txt], &txt),
        (
            c("u12", 2, "does not fit input 'image'"),
            vec![sub_shape.parent().unwrap().parent().unwrap()],
            &sub_shape,
        ),
        (
            c("u13", 2, "must be the only --input"),
            vec![&good, &dir_among_files],
            &dir_among_files,
        ),
        (c("u14", 3, "No such file"), vec![&missing], &missing),
    ];
    for (case, paths, named) in &cases {
        let mut args = vec!["validate", m, m];
        for p in paths {
            args.push("--input");
            args.push(p.to_str().unwrap());
        }
        failures.extend(check(&args, named, case));
        // u12's sub-folders have different shapes, which evaluate accepts (one load per shape) when they fit.
        if case.name != "u12" {
            let mut args = vec!["evaluate", m, "--latency", "0"];
            for p in paths {
                args.push("--input");
                args.push(p.to_str().unwrap());
            }
            failures.extend(check(&args, named, case));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- labels --------------------------------------------------------------------------------------------------

#[test]
fn bad_labels_exit_2_or_3_naming_the_file() {
    let dir = common::tempdir();
    let d = dir.path();
    let model = digits();
    let m = model.to_str().unwrap();
    // Three images, so three labels are expected.
    let images = d.join("images.npy");
    std::fs::write(
        &images,
        npy_v1(&header("<f4", false, "(3, 1, 8, 8)"), &f32_bytes(192)),
    )
    .unwrap();
    let i64s = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    let labels = |shape: &str, v: &[i64]| npy_v1(&header("<i8", false, shape), &i64s(v));
    let good = d.join("good_labels.npy");
    std::fs::write(&good, labels("(3,)", &[0, 1, 9])).unwrap();
    let (code, out, stderr) = cli(&[
        "evaluate",
        m,
        "--latency",
        "0",
        "--input",
        images.to_str().unwrap(),
        "--labels",
        good.to_str().unwrap(),
    ]);
    assert!(
        code == 0 && out.contains("accuracy"),
        "exit {code}: {stderr}"
    );

    let cases: Vec<(Case, Vec<u8>)> = vec![
        (
            c("l01_float_labels.npy", 2, "labels must be integers"),
            npy_v1(&header("<f4", false, "(3,)"), &f32_bytes(3)),
        ),
        (
            c(
                "l02_two_labels.npy",
                2,
                "2 labels but the classifier output gave 3 rows",
            ),
            labels("(2,)", &[0, 1]),
        ),
        (
            c("l03_class_10.npy", 2, "has 10 classes"),
            labels("(3,)", &[0, 10, 1]),
        ),
        (
            c("l04_negative.npy", 2, "is -1"),
            labels("(3,)", &[0, -1, 1]),
        ),
        (
            c("l05_matrix.npy", 2, "shape [N] or [N, 1]"),
            labels("(3, 2)", &[0, 1, 2, 3, 4, 5]),
        ),
        (c("l06_truncated.npy", 3, "truncated"), {
            let b = labels("(3,)", &[0, 1, 2]);
            b[..b.len() - 4].to_vec()
        }),
        (
            c("l07_bool.npy", 2, "labels must be integers"),
            npy_v1(&header("|b1", false, "(3,)"), &[0, 1, 1]),
        ),
        (
            c("l08_huge_u64.npy", 2, "past any class index"),
            npy_v1(&header("<u8", false, "(3,)"), &i64s(&[0, -5, 1])),
        ),
        (
            c("l09_garbage.npy", 3, "not an .npy file"),
            b"0\n1\n2\n".to_vec(),
        ),
    ];
    let mut failures = Vec::new();
    for (case, bytes) in &cases {
        let p = d.join(case.name);
        std::fs::write(&p, bytes).unwrap();
        let (ims, ps) = (images.to_str().unwrap(), p.to_str().unwrap());
        for args in [
            vec![
                "evaluate",
                m,
                "--latency",
                "0",
                "--input",
                ims,
                "--labels",
                ps,
            ],
            vec!["validate", m, m, "--input", ims, "--labels", ps],
        ] {
            failures.extend(check(&args, &p, case));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- library readers: truncations, bit flips, random bytes ----------------------------------------------------

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// The fuzz target's body (fuzz/fuzz_targets/tensor_file.rs): both readers on the same bytes; what they accept
/// must write back as .npy and read again to the same tensor. Returns how many readers accepted the bytes.
fn tensor_file_entry(data: &[u8]) -> usize {
    let mut ok = 0;
    let tensors = [
        npy::parse_npy("x", data).ok(),
        validate::parse_tensor_pb(data).ok().map(|(_, t)| t),
    ];
    for t in tensors.into_iter().flatten() {
        ok += 1;
        if let Ok(b) = npy::to_npy(&t) {
            let back = npy::parse_npy("x", &b).expect("a tensor we wrote reads back");
            assert!(back.same_content(&t), "round trip changed the tensor");
        }
    }
    ok
}

fn no_panic(data: &[u8], what: &str) -> usize {
    match std::panic::catch_unwind(|| tensor_file_entry(data)) {
        Ok(n) => n,
        Err(_) => panic!("panic on {what}"),
    }
}

fn valid_seeds() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "npy f32",
            npy_v1(&header("<f4", false, "(2, 3)"), &f32_bytes(6)),
        ),
        (
            "npy bool",
            npy_v1(&header("|b1", false, "(4,)"), &[0, 1, 1, 0]),
        ),
        (
            "npy v3 i64",
            npy_v3(&header("<i8", false, "(2,)"), &[1u8; 16]),
        ),
        (
            "pb f32 raw",
            tensor_pb("x", 1, &[2, 3], Some(&f32_bytes(6))).0,
        ),
        (
            "pb bool int32",
            tensor_pb("b", 9, &[3], None).bytes(5, &[1, 0, 1]).0,
        ),
        ("pb i64 raw", tensor_pb("i", 7, &[2], Some(&[2u8; 16])).0),
    ]
}

#[test]
fn truncations_and_bit_flips_of_tensor_files_never_panic() {
    let mut cases = 0;
    let mut accepted = 0;
    for (what, bytes) in valid_seeds() {
        assert_eq!(
            no_panic(&bytes, what),
            1,
            "{what} is a valid seed for exactly one reader"
        );
        for cut in 0..bytes.len() {
            accepted += no_panic(&bytes[..cut], &format!("{what} cut at {cut}"));
            cases += 1;
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64);
        for k in 0..1000 {
            let mut b = bytes.clone();
            for _ in 0..(1 + rng.next() % 8) {
                let i = (rng.next() % b.len() as u64) as usize;
                b[i] ^= 1 << (rng.next() % 8);
            }
            accepted += no_panic(&b, &format!("{what} flip #{k}"));
            cases += 1;
        }
    }
    assert!(cases > 6000, "{cases} cases");
    // The check can fail both ways: some mutants still parse (flips in the data), most do not.
    assert!(
        accepted > 0 && accepted < cases,
        "{accepted} of {cases} accepted"
    );
}

/// The fuzz entry point over a deterministic random corpus: random bytes, and random bytes after a valid
/// prefix (magic + header start, or TensorProto fields) so that the parsers get past their first checks.
#[test]
fn fuzz_entry_point_on_a_random_corpus() {
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        b"\x93NUMPY\x01\x00".to_vec(),
        b"\x93NUMPY\x03\x00".to_vec(),
        npy_v1(&header("<f4", false, "(2, 3)"), &[]),
        tensor_pb("x", 1, &[2, 3], None).0,
        tensor_pb("b", 9, &[3], None).0,
    ];
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut runs = 0u64;
    for k in 0..60_000u64 {
        let mut b = prefixes[(k % prefixes.len() as u64) as usize].clone();
        let len = (rng.next() % 96) as usize;
        // Draw bytes from a small alphabet half of the time: header punctuation and protobuf tags.
        let alphabet = b"{}()':, TrueFals0123456789-<|fiub\x08\x10\x12\x1a\x22\x2a\x4a";
        for _ in 0..len {
            let r = rng.next();
            b.push(if r & 1 == 0 {
                (r >> 8) as u8
            } else {
                alphabet[((r >> 8) % alphabet.len() as u64) as usize]
            });
        }
        no_panic(&b, &format!("random #{k}"));
        runs += 1;
    }
    assert_eq!(runs, 60_000);
}

// ---- crafted models that load fine ----------------------------------------------------------------------------

fn save(m: &onnx_rewrite::ir::Model, path: &Path) {
    std::fs::write(path, onnx_rewrite::io::to_bytes(m).unwrap()).unwrap();
}

#[test]
fn crafted_models_do_not_panic_in_validate_or_evaluate() {
    let dir = common::tempdir();
    let d = dir.path();
    let mut failures = Vec::new();
    let run = |args: &[&str], want: &[i32], reason: &str, failures: &mut Vec<String>| {
        let (code, stdout, stderr) = cli(args);
        let text = format!("{stdout}{stderr}");
        if !want.contains(&code) || !text.contains(reason) || stderr.contains("panicked") {
            failures.push(format!(
                "{}: exit {code} (want {want:?}, {reason:?}): {stderr}",
                args.join(" ")
            ));
        }
    };

    // An input declaring 10^15 floats: refused before allocating, with the --dim hint.
    let mut b = GraphBuilder::new("huge");
    let x = b.input("x", DataType::FLOAT, &["100000", "100000", "100000"]);
    let y = b.node("Relu", &[x], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["100000", "100000", "100000"]);
    let huge = d.join("m01_huge_input.onnx");
    save(&model(b.build(), 17), &huge);
    let h = huge.to_str().unwrap();
    run(&["validate", h, h], &[2], "--dim", &mut failures);
    run(
        &["evaluate", h, "--latency", "0"],
        &[2],
        "--dim",
        &mut failures,
    );

    // Symbolic dims set huge from the command line: same refusal.
    let mut b = GraphBuilder::new("sym");
    let x = b.input("x", DataType::FLOAT, &["N", "C"]);
    let y = b.node("Relu", &[x], vec![], 1)[0];
    b.output(y, DataType::FLOAT, &["N", "C"]);
    let sym = d.join("m02_symbolic.onnx");
    save(&model(b.build(), 17), &sym);
    let s = sym.to_str().unwrap();
    run(
        &[
            "validate",
            s,
            s,
            "--dim",
            "N=4294967296",
            "--dim",
            "C=4294967296",
        ],
        &[2],
        "limit",
        &mut failures,
    );
    run(
        &["validate", s, s, "--int-range", "5:5"],
        &[2],
        "int_range",
        &mut failures,
    );

    // A classifier whose last dim is 0 in the second sample (our accuracy code used to chunk by 0 and panic).
    let img = |n: usize, c: usize| {
        npy_v1(
            &header("<f4", false, &format!("({n}, {c})")),
            &f32_bytes(n * c),
        )
    };
    std::fs::create_dir_all(d.join("m02_samples/s0")).unwrap();
    std::fs::create_dir_all(d.join("m02_samples/s1")).unwrap();
    std::fs::write(d.join("m02_samples/s0/x.npy"), img(2, 3)).unwrap();
    std::fs::write(d.join("m02_samples/s1/x.npy"), img(2, 0)).unwrap();
    let labels = d.join("m02_labels.npy");
    std::fs::write(&labels, npy_v1(&header("<i8", false, "(2,)"), &[0u8; 16])).unwrap();
    let folder = d.join("m02_samples");
    let (f, l) = (folder.to_str().unwrap(), labels.to_str().unwrap());
    run(
        &["evaluate", s, "--latency", "0", "--input", f, "--labels", l],
        &[0],
        "accuracy",
        &mut failures,
    );

    // Gather from a table with no rows, at an axis past the table's rank, at a huge negative axis: the
    // int-range logic must not index past anything (tract may refuse the run; it must not be our panic).
    for (k, (rows, axis)) in [(0i64, 0i64), (4, 7), (4, i64::MIN + 1)]
        .into_iter()
        .enumerate()
    {
        let mut b = GraphBuilder::new("gather");
        let ids = b.input("ids", DataType::INT64, &["N"]);
        let table = b.initializer(Tensor::from_f32(
            "table",
            vec![rows, 2],
            &vec![0.5; rows as usize * 2],
        ));
        let y = b.node(
            "Gather",
            &[table, ids],
            vec![Attribute::int("axis", axis)],
            1,
        )[0];
        b.output(y, DataType::FLOAT, &["N", "2"]);
        let p = d.join(format!("m03_gather_{k}.onnx"));
        save(&model(b.build(), 17), &p);
        let ps = p.to_str().unwrap();
        for args in [
            vec!["validate", ps, ps],
            vec!["evaluate", ps, "--latency", "0"],
        ] {
            let (code, _, stderr) = cli(&args);
            // An empty table has no valid index: refused before tract runs (tract panicked on it).
            let refused = k != 0 || (code == 2 && stderr.contains("no rows"));
            if !refused || !(code == 0 || (2..=5).contains(&code)) || stderr.contains("panicked at")
            {
                failures.push(format!("{}: exit {code}: {stderr}", args.join(" ")));
            }
        }
    }

    // Two inputs, one file: the missing input is named, with the file given (exit 2).
    let mut b = GraphBuilder::new("two");
    let x = b.input("a", DataType::FLOAT, &["1", "2"]);
    let y = b.input("b", DataType::FLOAT, &["1", "2"]);
    let z = b.node("Add", &[x, y], vec![], 1)[0];
    b.output(z, DataType::FLOAT, &["1", "2"]);
    let two = d.join("m05_two_inputs.onnx");
    save(&model(b.build(), 17), &two);
    let only_a = d.join("m05_only_a/a.npy");
    std::fs::create_dir_all(only_a.parent().unwrap()).unwrap();
    std::fs::write(
        &only_a,
        npy_v1(&header("<f4", false, "(1, 2)"), &f32_bytes(2)),
    )
    .unwrap();
    let (t, a) = (two.to_str().unwrap(), only_a.to_str().unwrap());
    run(
        &["validate", t, t, "--input", a],
        &[2],
        "no file for input 'b'",
        &mut failures,
    );
    run(
        &["validate", t, t, "--input", a],
        &[2],
        "m05_only_a",
        &mut failures,
    );
    // Both files: it runs (so the refusal above is about the count).
    let only_b = d.join("m05_only_a/b.npy");
    std::fs::write(
        &only_b,
        npy_v1(&header("<f4", false, "(1, 2)"), &f32_bytes(2)),
    )
    .unwrap();
    let folder = only_a.parent().unwrap().to_str().unwrap();
    run(
        &["validate", t, t, "--input", folder],
        &[0],
        "",
        &mut failures,
    );

    // An input of a dtype random inputs cannot be made of: a usage error naming the input, not a drift.
    let mut b = GraphBuilder::new("strings");
    let x = b.input("text", DataType::STRING, &["1"]);
    let y = b.node("Identity", &[x], vec![], 1)[0];
    b.output(y, DataType::STRING, &["1"]);
    let st = d.join("m04_string_input.onnx");
    save(&model(b.build(), 17), &st);
    let sp = st.to_str().unwrap();
    run(&["validate", sp, sp], &[2], "input 'text'", &mut failures);

    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
