//! The C++ shim's boundary, checked: csrc/torchfit.h declares every extern "C" function of
//! the shim once (every .cpp includes it, so the compiler checks the definitions against it),
//! and the Rust side declares each library's functions once, with the same names and types:
//! src/shim/ffi.rs for the functions linked into the binary, src/cuda.rs's `cuda_library!`
//! for libtorchfit_cuda.so. Also csrc/gloo_decl/README.md's `nm` check: none of our code
//! defines a gloo symbol (libtorch's gloo must be the only one the dynamic linker can bind).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A function's parameter types and return type, as Rust writes them ("" for none).
type Signature = (Vec<String>, String);
type Declarations = BTreeMap<String, Signature>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `text` without `//` comments (neither file puts `//` inside a string).
fn without_comments(text: &str) -> String {
    text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
}

/// A C type (`const char* const*`, `size_t`, ...) as the Rust FFI type that matches it.
fn rust_type(c: &str) -> String {
    let spaced = c.replace('*', " * ");
    let mut tokens = spaced.split_whitespace().peekable();
    let mut is_const = false;
    if tokens.peek() == Some(&"const") {
        is_const = true;
        tokens.next();
    }
    let base = match tokens.next().unwrap_or("") {
        "void" => "c_void",
        "char" => "c_char",
        "int" => "c_int",
        "size_t" => "usize",
        "int64_t" => "i64",
        "uint16_t" => "u16",
        "uint8_t" => "u8",
        "double" => "f64",
        other => panic!("no Rust type for the C type {other:?} (in {c:?}): add it here"),
    };
    let mut rust = base.to_string();
    for token in tokens {
        match token {
            "const" => is_const = true,
            "*" => {
                rust = format!("*{} {rust}", if is_const { "const" } else { "mut" });
                is_const = false;
            }
            other => panic!("unexpected {other:?} in the C type {c:?}"),
        }
    }
    rust
}

/// A C parameter (`const char* name`) without its name, as a Rust type.
fn c_parameter(param: &str) -> String {
    let param = param.trim();
    let cut = param.rfind(|c: char| !(c.is_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
    rust_type(&param[..cut])
}

/// csrc/torchfit.h's declarations, by section (`// ---- library: NAME ... ----`).
fn header() -> BTreeMap<String, Declarations> {
    let text = read(&root().join("csrc/torchfit.h"));
    let mut sections = BTreeMap::new();
    for part in text.split("// ---- library: ").skip(1) {
        let (title, body) = part.split_once('\n').unwrap();
        let name = title.split_whitespace().next().unwrap().to_string();
        let code = without_comments(body);
        let mut decls = Declarations::new();
        for decl in code.split(';') {
            let decl = decl.split_whitespace().collect::<Vec<_>>().join(" ");
            let Some(open) = decl.find("tf_") else { continue };
            let (ret, rest) = decl.split_at(open);
            let (name, params) = rest.split_once('(').unwrap();
            let params = params.trim_end_matches(')').trim();
            let params: Vec<String> = match params {
                "" | "void" => vec![],
                _ => params.split(',').map(c_parameter).collect(),
            };
            let ret = match ret.trim() {
                "void" => String::new(),
                c => rust_type(c),
            };
            assert!(decls.insert(name.trim().to_string(), (params, ret)).is_none(), "{name} declared twice");
        }
        sections.insert(name, decls);
    }
    sections
}

/// Every `fn tf_*(...) -> ...;` declared in a Rust file: name, parameter types, return type.
fn rust_declarations(text: &str) -> Declarations {
    let code = without_comments(text);
    let mut decls = Declarations::new();
    for part in code.split("fn tf_").skip(1) {
        let (name, rest) = part.split_once('(').unwrap();
        let (params, rest) = rest.split_once(')').unwrap();
        let declaration = rest.split(';').next().unwrap();
        let ret = declaration.trim().strip_prefix("->").map_or(String::new(), |r| r.trim().to_string());
        let params = params
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| p.split_once(':').unwrap().1.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        let name = format!("tf_{}", name.trim());
        assert!(decls.insert(name.clone(), (params, ret)).is_none(), "{name} declared twice");
    }
    decls
}

fn assert_same(library: &str, header: &Declarations, rust: &Declarations, rust_file: &str) {
    for (name, signature) in header {
        match rust.get(name) {
            None => panic!("{name} ({library}) is declared in csrc/torchfit.h but not in {rust_file}"),
            Some(ours) => assert_eq!(
                ours, signature,
                "{name}: {rust_file} declares (parameters, return) {ours:?}, csrc/torchfit.h {signature:?}"
            ),
        }
    }
    for name in rust.keys() {
        assert!(header.contains_key(name), "{rust_file} declares {name}, which csrc/torchfit.h's {library} lacks");
    }
}

#[test]
fn the_rust_declarations_are_the_headers_library_by_library() {
    let header = header();
    assert_eq!(header.keys().collect::<Vec<_>>(), ["libtorchfit_cuda.so", "torchfit"]);
    let linked = rust_declarations(&read(&root().join("src/shim/ffi.rs")));
    assert_same("torchfit", &header["torchfit"], &linked, "src/shim/ffi.rs");
    let cuda = read(&root().join("src/cuda.rs"));
    let list = cuda.split("\ncuda_library! {").nth(1).expect("src/cuda.rs has no cuda_library! list");
    let list = &list[..list.find("\n}").unwrap()];
    assert_same("libtorchfit_cuda.so", &header["libtorchfit_cuda.so"], &rust_declarations(list), "src/cuda.rs");
    println!("{} + {} functions, declared alike", header["torchfit"].len(), header["libtorchfit_cuda.so"].len());
}

fn files(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, extension, found);
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
}

#[test]
fn no_third_list_and_every_definition_is_declared() {
    // No Rust file besides the two lists declares a shim function.
    let mut sources = Vec::new();
    files(&root().join("src"), "rs", &mut sources);
    for file in sources {
        let rel = file.strip_prefix(root()).unwrap();
        if rel == Path::new("src/shim/ffi.rs") || rel == Path::new("src/cuda.rs") {
            continue;
        }
        let code = without_comments(&read(&file));
        assert!(!code.contains("fn tf_"), "{} declares a shim function: they belong in src/shim/ffi.rs", rel.display());
    }
    // Every .cpp includes the header, and every function it defines at the top level is one
    // the header declares (the compiler then checks the definition against it).
    let declared: Vec<String> = header().into_values().flat_map(|d| d.into_keys()).collect();
    let mut cpps = Vec::new();
    files(&root().join("csrc"), "cpp", &mut cpps);
    assert!(cpps.len() >= 6, "{cpps:?}");
    for cpp in cpps {
        let text = read(&cpp);
        assert!(text.contains("#include \"torchfit.h\""), "{} does not include torchfit.h", cpp.display());
        for line in text.lines().filter(|l| !l.starts_with(' ') && !l.starts_with("//")) {
            let Some(at) = line.find("tf_") else { continue };
            let name: String = line[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if line[at + name.len()..].starts_with('(') {
                assert!(declared.contains(&name), "{}: {name} is not declared in csrc/torchfit.h", cpp.display());
            }
        }
    }
}

/// `nm -C` of `file`: (type letter, demangled name) of each symbol.
fn symbols(file: &Path) -> Vec<(char, String)> {
    let out = Command::new("nm")
        .arg("-C")
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nm ({e}): install binutils"));
    assert!(out.status.success(), "nm {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter_map(|line| {
            // "<address> <type> <name>", or "<spaces> U <name>" for an undefined one.
            let rest = line.trim_start();
            let rest = match rest.split_once(' ') {
                Some((first, after)) if first.len() > 1 && first.chars().all(|c| c.is_ascii_hexdigit()) => after,
                _ => rest,
            };
            let (kind, name) = rest.split_once(' ')?;
            let mut kind_chars = kind.chars();
            let kind = kind_chars.next()?;
            kind_chars.next().is_none().then(|| (kind, name.to_string()))
        })
        .collect()
}

/// Defined here: not `U` (undefined) nor `w`/`v` (weak and undefined).
fn defined(kind: char) -> bool {
    !matches!(kind, 'U' | 'w' | 'v')
}

/// The gloo symbols `file` defines: names in namespace gloo, or libtorch's GlooStore (whose
/// inline methods would be our view of gloo's classes).
fn gloo_definitions(file: &Path) -> Vec<(char, String)> {
    symbols(file)
        .into_iter()
        .filter(|(kind, name)| defined(*kind) && (name.contains("gloo::") || name.contains("GlooStore")))
        .collect()
}

#[test]
fn the_gloo_check_finds_definitions_and_passes_references() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("gloo.cpp");
    std::fs::write(
        &source,
        "namespace gloo { void referenced(); namespace rendezvous { struct Store { virtual ~Store(); };\n\
         Store::~Store() {} } }\nvoid user() { gloo::referenced(); }\n",
    )
    .unwrap();
    let object = dir.path().join("gloo.o");
    let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let status = Command::new(&compiler).arg("-c").arg(&source).arg("-o").arg(&object).status();
    assert!(status.as_ref().is_ok_and(|s| s.success()), "{compiler} -c: {status:?}");
    let found: Vec<String> = gloo_definitions(&object).into_iter().map(|(_, name)| name).collect();
    assert!(found.iter().any(|n| n.contains("gloo::rendezvous::Store::~Store()")), "{found:?}");
    assert!(!found.iter().any(|n| n.contains("referenced")), "an undefined reference was counted: {found:?}");
}

#[test]
fn no_gloo_symbol_is_defined_by_our_code() {
    let out_dir = PathBuf::from(env!("TORCHFIT_SHIM_OUT_DIR"));
    let objects = [
        out_dir.join("libtorchfit_c10d.a"),
        out_dir.join("libtorchfit_shim.a"),
        PathBuf::from(env!("TORCHFIT_CUDA_LIBRARY")),
        PathBuf::from(env!("CARGO_BIN_EXE_torchfit")),
    ];
    for object in &objects {
        let symbols = symbols(object);
        let gloo = gloo_definitions(object);
        assert!(gloo.is_empty(), "{} defines gloo symbols (see csrc/gloo_decl/README.md): {gloo:?}", object.display());
        let undefined_gloo = symbols.iter().filter(|(k, n)| !defined(*k) && n.contains("gloo::")).count();
        println!("{}: {} symbols, {undefined_gloo} undefined gloo references", object.display(), symbols.len());
    }
    // The parse sees definitions: the c10d archive defines the Gloo group's constructor.
    let c10d = symbols(&objects[0]);
    assert!(c10d.iter().any(|(k, n)| *k == 'T' && n == "tf_pg_gloo"), "nm's output was not understood");
}
