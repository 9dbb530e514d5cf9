//! PyTorch `torch.save` zip archives (e.g. `sam2.1_hiera_*.pt`) read without executing pickled code.
//!
//! A `torch.save` file is a zip archive holding `<root>/data.pkl` (a pickle describing the saved
//! object), one blob `<root>/data/<key>` per tensor storage, `<root>/byteorder` and
//! `<root>/version`. A pickle is a small program: Python's unpickler imports and *calls* whatever
//! globals it names, so loading an untrusted `.pt` with `pickle` can run arbitrary code. This
//! module therefore interprets the pickle opcodes itself, on plain data only:
//!
//! * the only globals it accepts are the handful `torch.save` needs to describe a state dict
//!   (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2` and relatives, the
//!   `torch.*Storage` types, `torch` dtypes, a few builtin containers); any other global is
//!   refused *by name* before anything else happens;
//! * "calling" an accepted global never runs foreign code: each one is a fixed Rust
//!   reconstruction (build a dict, describe a strided view of a storage, …);
//! * `BUILD` states (Python `__setstate__`) are ignored, since tensors and dicts need none.
//!
//! Tensors are decoded lazily: only those reachable from the selected state dict have their
//! storage blobs read, and every dtype is converted to f32 (see [`super::HostTensor`]).

use super::safetensors_file::decode;
use super::{HostTensor, LoadError, TensorMap};
use safetensors::Dtype;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::rc::Rc;

/// Read the tensors of a `torch.save` zip archive.
///
/// The state dict is found automatically: when the saved object is a dict with a `"model"`
/// (SAM 2.1 releases) or `"state_dict"` (RSRefSeg 2 release, Lightning/mmengine checkpoints)
/// entry that holds tensors, only that entry is returned, with its own key names. Otherwise every
/// tensor of the saved object is returned, nested dicts (and lists) flattened with dotted names.
/// Non-tensor entries are skipped.
pub fn read(bytes: &[u8], origin: &str) -> Result<TensorMap, LoadError> {
    read_with_root(bytes, origin, None)
}

/// [`read`] with an explicit top-level entry: `Some("model")` returns the tensors under
/// `obj["model"]` (a dotted path such as `"module.state_dict"` descends nested dicts when no
/// top-level key matches it literally); `None` selects automatically as [`read`] does.
pub fn read_with_root(bytes: &[u8], origin: &str, root_key: Option<&str>) -> Result<TensorMap, LoadError> {
    let err = |m: String| LoadError::format(origin, m);
    if !bytes.starts_with(b"PK\x03\x04") {
        return Err(err(not_zip_message(bytes)));
    }
    read_limited(bytes, origin, root_key, SLACK_BYTES)
}

/// [`read_with_root`] with the slack of the memory limits as a parameter (tests use 0 to reach the
/// limits with small archives).
fn read_limited(bytes: &[u8], origin: &str, root_key: Option<&str>, slack: u64) -> Result<TensorMap, LoadError> {
    let err = |m: String| LoadError::format(origin, m);
    let mut archive = Archive::open(bytes, slack).map_err(err)?;
    let pickle = archive.entry("data.pkl").map_err(err)?;
    let top = Vm::new(&pickle).run().map_err(err)?;
    let selected = select_root(&top, root_key).map_err(err)?;
    let mut found = Vec::new();
    flatten(selected, "", 0, &mut found).map_err(err)?;
    if found.is_empty() {
        return Err(err("the archive holds no tensors".into()));
    }
    materialize(found, &mut archive).map_err(err)
}

/// True for a file written by `torch.save(..., _use_new_zipfile_serialization=False)` (torch < 1.6
/// default): a bare pickle stream starting with torch's magic number.
pub fn is_legacy_torch_pickle(bytes: &[u8]) -> bool {
    // pickle.dump(0x1950a86a20f9469cfc6c, protocol=p): PROTO p, LONG1 10, the number little-endian.
    const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
    bytes.len() >= 14 && bytes[0] == 0x80 && bytes[2] == 0x8a && bytes[3] == 10 && bytes[4..14] == MAGIC
}

fn not_zip_message(bytes: &[u8]) -> String {
    const RESAVE: &str = "re-save it with a current torch (torch.save(torch.load(path), new_path)) or convert it to safetensors";
    if is_legacy_torch_pickle(bytes) {
        format!("legacy torch checkpoint, saved with _use_new_zipfile_serialization=False; {RESAVE}")
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        format!("legacy tar-format torch checkpoint (torch < 0.4); {RESAVE}")
    } else if bytes.first() == Some(&0x80) {
        format!("a bare pickle stream, not a torch zip archive; {RESAVE}")
    } else {
        "not a torch zip archive (no zip signature)".into()
    }
}

// ---------------------------------------------------------------------------------------------
// Archive access

/// Bytes a checkpoint may decompress to: `INFLATE_RATIO` × its file size plus `SLACK_BYTES`.
/// `torch.save` stores records uncompressed and float data deflates poorly, so real checkpoints
/// stay near 1×; a zip bomb (a few hundred KB inflating to GBs) is refused before it is inflated.
const INFLATE_RATIO: u64 = 4;
/// Bytes the decoded tensors may occupy: `VIEW_RATIO` × the storage read (as f32) plus
/// `SLACK_BYTES`. Tensors sharing a storage (tied weights) are each copied out, which may double
/// it; dozens of full views of one storage (another bomb) are refused.
const VIEW_RATIO: u64 = 2;
const SLACK_BYTES: u64 = 256 << 20;

struct Archive<'a> {
    zip: zip::ZipArchive<Cursor<&'a [u8]>>,
    /// `<root>/` prefix of every record.
    root: String,
    big_endian: bool,
    /// Decompressed bytes every record read so far may still add (see [`INFLATE_RATIO`]).
    inflate_budget: u64,
    /// Storage read so far, in bytes of f32 values (the base of the decoded-tensor budget).
    storage_bytes: u64,
    file_len: u64,
    /// [`SLACK_BYTES`] (tests: less).
    slack: u64,
}

impl<'a> Archive<'a> {
    fn open(bytes: &'a [u8], slack: u64) -> Result<Self, String> {
        let zip = zip::ZipArchive::new(Cursor::new(bytes))
            .map_err(|e| format!("not a readable zip archive (truncated or damaged?): {e}"))?;
        // torch writes every record under one top-level folder named after the file.
        let root = zip
            .file_names()
            .filter(|n| n.ends_with("data.pkl"))
            .filter_map(|n| n.strip_suffix("data.pkl"))
            .filter(|p| p.is_empty() || (p.ends_with('/') && p.matches('/').count() == 1))
            .min_by_key(|p| p.len())
            .map(str::to_string);
        let Some(root) = root else {
            let torchscript = zip.file_names().any(|n| n.ends_with("constants.pkl") || n.contains("/code/"));
            return Err(if torchscript {
                "a TorchScript archive (torch.jit.save), not a torch.save checkpoint; save the model's state_dict() with torch.save".into()
            } else {
                "zip archive without data.pkl: not a torch.save checkpoint".into()
            });
        };
        let file_len = bytes.len() as u64;
        let inflate_budget = file_len.saturating_mul(INFLATE_RATIO).saturating_add(slack);
        let mut archive = Archive { zip, root, big_endian: false, inflate_budget, storage_bytes: 0, file_len, slack };
        if archive.has("byteorder") {
            let order = archive.entry("byteorder")?;
            archive.big_endian = match order.trim_ascii() {
                b"little" => false,
                b"big" => true,
                other => return Err(format!("unknown byte order {:?}", String::from_utf8_lossy(other))),
            };
        }
        Ok(archive)
    }

    fn has(&self, name: &str) -> bool {
        let full = format!("{}{name}", self.root);
        self.zip.file_names().any(|n| n == full)
    }

    fn entry(&mut self, name: &str) -> Result<Vec<u8>, String> {
        let full = format!("{}{name}", self.root);
        let mut file = self.zip.by_name(&full).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => {
                format!("record {full} is missing (truncated or damaged archive)")
            }
            e => format!("cannot open record {full}: {e}"),
        })?;
        let budget = self.inflate_budget;
        let too_big = || {
            format!(
                "record {full} inflates beyond the limit for this {}-byte file ({INFLATE_RATIO}× its size + {} MiB): \
                 a compressed bomb or a damaged archive",
                self.file_len,
                self.slack >> 20
            )
        };
        if file.size() > budget {
            return Err(too_big());
        }
        let mut out = Vec::with_capacity(file.size() as usize);
        // The declared size may lie: read at most one byte beyond the budget.
        (&mut file).take(budget + 1).read_to_end(&mut out).map_err(|e| format!("cannot read record {full}: {e}"))?;
        if out.len() as u64 > budget {
            return Err(too_big());
        }
        self.inflate_budget -= out.len() as u64;
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Values of the pickle machine

/// Element type of a torch storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Kind {
    fn dtype(self) -> Dtype {
        match self {
            Kind::F32 => Dtype::F32,
            Kind::F16 => Dtype::F16,
            Kind::BF16 => Dtype::BF16,
            Kind::F64 => Dtype::F64,
            Kind::I64 => Dtype::I64,
            Kind::I32 => Dtype::I32,
            Kind::I16 => Dtype::I16,
            Kind::I8 => Dtype::I8,
            Kind::U8 => Dtype::U8,
            Kind::Bool => Dtype::BOOL,
        }
    }

    fn size(self) -> usize {
        self.dtype().size()
    }

    fn from_storage_name(name: &str) -> Option<Kind> {
        Some(match name {
            "FloatStorage" => Kind::F32,
            "HalfStorage" => Kind::F16,
            "BFloat16Storage" => Kind::BF16,
            "DoubleStorage" => Kind::F64,
            "LongStorage" => Kind::I64,
            "IntStorage" => Kind::I32,
            "ShortStorage" => Kind::I16,
            "CharStorage" => Kind::I8,
            "ByteStorage" | "UntypedStorage" => Kind::U8,
            "BoolStorage" => Kind::Bool,
            _ => return None,
        })
    }

    fn from_dtype_name(name: &str) -> Option<Kind> {
        Some(match name {
            "float32" | "float" => Kind::F32,
            "float16" | "half" => Kind::F16,
            "bfloat16" => Kind::BF16,
            "float64" | "double" => Kind::F64,
            "int64" | "long" => Kind::I64,
            "int32" | "int" => Kind::I32,
            "int16" | "short" => Kind::I16,
            "int8" => Kind::I8,
            "uint8" => Kind::U8,
            "bool" => Kind::Bool,
            _ => return None,
        })
    }
}

/// The accepted globals. Each "call" is a fixed reconstruction in Rust, see [`Vm::call`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Global {
    OrderedDict,
    Dict,
    Set,
    List,
    Tuple,
    RebuildTensor,
    RebuildTensorV2,
    RebuildTensorV3,
    RebuildParameter,
    RebuildFromTypeV2,
    TensorClass,
    ParameterClass,
    StorageType(Kind),
    Dtype(Kind),
    CodecsEncode,
}

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("builtins" | "__builtin__", "dict") => Some(Global::Dict),
        ("builtins" | "__builtin__", "set" | "frozenset") => Some(Global::Set),
        ("builtins" | "__builtin__", "list") => Some(Global::List),
        ("builtins" | "__builtin__", "tuple") | ("torch", "Size") => Some(Global::Tuple),
        ("torch._utils", "_rebuild_tensor") => Some(Global::RebuildTensor),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_tensor_v3") => Some(Global::RebuildTensorV3),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => Some(Global::RebuildParameter),
        ("torch._tensor", "_rebuild_from_type_v2") => Some(Global::RebuildFromTypeV2),
        ("torch", "Tensor") => Some(Global::TensorClass),
        ("torch.nn.parameter", "Parameter") => Some(Global::ParameterClass),
        ("torch", n) => Kind::from_storage_name(n)
            .map(Global::StorageType)
            .or_else(|| Kind::from_dtype_name(n).map(Global::Dtype)),
        // Protocol 2 pickles `bytes` as `_codecs.encode(text, "latin1")`: pure, no side effects.
        ("_codecs", "encode") => Some(Global::CodecsEncode),
        _ => None,
    };
    g.ok_or_else(|| {
        format!(
            "refusing to load: the pickle references `{module}.{name}`, which is not tensor storage \
             (checkpoints are read without running pickled code, so only the globals torch.save \
             uses for tensors and dicts are accepted)"
        )
    })
}

/// A tensor as the pickle describes it: a strided view of a storage blob.
#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    /// Element type of the view, when it differs from the storage's (`_rebuild_tensor_v3`).
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

#[derive(Debug)]
struct StorageRef {
    kind: Kind,
    key: String,
    numel: i64,
}

/// A dict keeps insertion order; string and integer keys are indexed so that repeated keys
/// overwrite like Python's.
#[derive(Default)]
struct DictObj {
    items: Vec<(Value, Value)>,
    index: HashMap<KeyRepr, usize>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum KeyRepr {
    Str(Rc<str>),
    Int(i64),
}

impl DictObj {
    fn insert(&mut self, k: Value, v: Value) {
        let repr = match &k {
            Value::Str(s) => Some(KeyRepr::Str(s.clone())),
            Value::Int(i) => Some(KeyRepr::Int(*i)),
            _ => None,
        };
        match repr {
            Some(r) => match self.index.get(&r) {
                Some(&i) => self.items[i].1 = v,
                None => {
                    self.index.insert(r, self.items.len());
                    self.items.push((k, v));
                }
            },
            None => self.items.push((k, v)),
        }
    }

    fn get_str(&self, key: &str) -> Option<&Value> {
        self.index.get(&KeyRepr::Str(key.into())).map(|&i| &self.items[i].1)
    }
}

#[derive(Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64 (never a valid size, offset or key).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Items>),
    List(Rc<RefCell<Items>>),
    Dict(Rc<RefCell<DictObj>>),
    Set(Rc<RefCell<Items>>),
    Global(Global),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
}

impl Value {
    fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Set(_) => "set",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }

    /// Items of a tuple or list.
    fn seq(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.0.clone()),
            Value::List(l) | Value::Set(l) => Some(l.borrow().0.clone()),
            _ => None,
        }
    }

    fn int(&self, what: &str) -> Result<i64, String> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            v => Err(format!("{what}: expected an integer, found {}", v.kind_name())),
        }
    }

    fn ints(&self, what: &str) -> Result<Vec<i64>, String> {
        self.seq()
            .ok_or_else(|| format!("{what}: expected a tuple of integers, found {}", self.kind_name()))?
            .iter()
            .map(|v| v.int(what))
            .collect()
    }
}

/// Items of a tuple, list or set. Its `Drop` (like [`DictObj`]'s) releases nested containers
/// iteratively: a pickle can nest containers a million levels deep in a few megabytes, and the
/// default recursive drop would then overflow the stack.
#[derive(Default)]
struct Items(Vec<Value>);

impl Drop for Items {
    fn drop(&mut self) {
        dismantle(std::mem::take(&mut self.0));
    }
}

impl Drop for DictObj {
    fn drop(&mut self) {
        let items = std::mem::take(&mut self.items);
        dismantle(items.into_iter().flat_map(|(k, v)| [k, v]).collect());
    }
}

fn dismantle(roots: Vec<Value>) {
    let mut work = roots;
    while let Some(v) = work.pop() {
        // The last handle of a container hands its items to the work list (the container itself
        // is then dropped empty); other handles only decrement a count.
        match v {
            Value::Tuple(rc) => {
                if let Ok(mut items) = Rc::try_unwrap(rc) {
                    work.append(&mut items.0);
                }
            }
            Value::List(rc) | Value::Set(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    work.append(&mut cell.into_inner().0);
                }
            }
            Value::Dict(rc) => {
                if let Ok(cell) = Rc::try_unwrap(rc) {
                    let mut d = cell.into_inner();
                    for (k, v) in std::mem::take(&mut d.items) {
                        work.push(k);
                        work.push(v);
                    }
                }
            }
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The pickle machine

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

impl<'a> Vm<'a> {
    fn new(data: &'a [u8]) -> Self {
        Vm { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: HashMap::new() }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let Some(end) = end else {
            return Err("data.pkl ends in the middle of an instruction (truncated)".into());
        };
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("data.pkl: unterminated text argument")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "data.pkl: text argument is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn raw_line(&mut self) -> Result<&'a [u8], String> {
        let rest = &self.data[self.pos..];
        let n = rest.iter().position(|&b| b == b'\n').ok_or("data.pkl: unterminated text argument")?;
        self.pos += n + 1;
        Ok(&rest[..n])
    }
    fn sized(&mut self, n: u64) -> Result<&'a [u8], String> {
        let n = usize::try_from(n).map_err(|_| "data.pkl: length out of range")?;
        self.take(n)
    }
    fn text(&mut self, n: u64) -> Result<Value, String> {
        let b = self.sized(n)?;
        let s = std::str::from_utf8(b).map_err(|_| "data.pkl: string is not valid UTF-8")?;
        Ok(Value::Str(s.into()))
    }

    fn pop(&mut self) -> Result<Value, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("data.pkl: stack underflow (malformed pickle)".into());
        }
        Ok(self.stack.pop().unwrap())
    }
    fn top(&mut self) -> Result<&mut Value, String> {
        self.stack.last_mut().ok_or_else(|| "data.pkl: stack underflow (malformed pickle)".to_string())
    }
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let m = self.marks.pop().ok_or("data.pkl: missing MARK (malformed pickle)")?;
        if m > self.stack.len() {
            return Err("data.pkl: stack underflow (malformed pickle)".into());
        }
        Ok(self.stack.split_off(m))
    }
    fn memo_get(&self, k: u32) -> Result<Value, String> {
        self.memo.get(&k).cloned().ok_or_else(|| format!("data.pkl: memo entry {k} used before it was set"))
    }
    fn memo_put(&mut self, k: u32) -> Result<(), String> {
        let v = self.stack.last().cloned().ok_or("data.pkl: stack underflow (malformed pickle)")?;
        self.memo.insert(k, v);
        Ok(())
    }
    fn push_global(&mut self, module: &str, name: &str) -> Result<(), String> {
        let g = resolve_global(module, name)?;
        self.stack.push(Value::Global(g));
        Ok(())
    }

    fn run(mut self) -> Result<Value, String> {
        loop {
            let op = self.u8().map_err(|_| "data.pkl ends without STOP (truncated)".to_string())?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("data.pkl uses pickle protocol {p}, newer than 5"));
                    }
                }
                0x95 => {
                    // FRAME: a length prefix only; the opcodes follow inline.
                    self.u64()?;
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.stack.push(v);
                }
                // --- scalars
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32 as i64;
                    self.stack.push(Value::Int(v));
                }
                b'K' => {
                    let v = self.u8()? as i64;
                    self.stack.push(Value::Int(v));
                }
                b'M' => {
                    let v = self.u16()? as i64;
                    self.stack.push(Value::Int(v));
                }
                0x8a | 0x8b => {
                    // LONG1 / LONG4: little-endian two's complement of the given length.
                    let n = if op == 0x8a { self.u8()? as u64 } else { self.u32()? as u64 };
                    let b = self.sized(n)?;
                    self.stack.push(long_from_bytes(b));
                }
                b'I' | b'L' => {
                    // INT / LONG (text protocol)
                    let l = self.line()?;
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => l
                            .trim_end_matches('L')
                            .parse::<i64>()
                            .map(Value::Int)
                            .map_err(|_| format!("data.pkl: bad integer literal {l:?}"))?,
                    };
                    self.stack.push(v);
                }
                b'G' => {
                    // BINFLOAT: big-endian IEEE double.
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l.parse::<f64>().map_err(|_| format!("data.pkl: bad float literal {l:?}"))?;
                    self.stack.push(Value::Float(v));
                }
                // --- strings and bytes
                b'X' => {
                    let n = self.u32()? as u64;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8c => {
                    let n = self.u8()? as u64;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                0x8d => {
                    let n = self.u64()?;
                    let v = self.text(n)?;
                    self.stack.push(v);
                }
                b'T' | b'U' => {
                    // BINSTRING / SHORT_BINSTRING (Python 2 str): decoded like torch.load does.
                    let n = if op == b'T' { self.u32()? as u64 } else { self.u8()? as u64 };
                    let b = self.sized(n)?;
                    self.stack.push(Value::Str(String::from_utf8_lossy(b).as_ref().into()));
                }
                b'B' | b'C' | 0x8e => {
                    let n = match op {
                        b'B' => self.u32()? as u64,
                        b'C' => self.u8()? as u64,
                        _ => self.u64()?,
                    };
                    self.sized(n)?;
                    self.stack.push(Value::Bytes);
                }
                // --- containers
                b'}' => self.stack.push(Value::Dict(Default::default())),
                b']' => self.stack.push(Value::List(Default::default())),
                b')' => self.stack.push(Value::Tuple(Default::default())),
                0x8f => self.stack.push(Value::Set(Default::default())),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = dict_from_flat(items)?;
                    self.stack.push(d);
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(Rc::new(RefCell::new(Items(items)))));
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Set(Rc::new(RefCell::new(Items(items)))));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.stack.push(Value::Tuple(Rc::new(Items(items))));
                }
                b'a' => {
                    let v = self.pop()?;
                    append(self.top()?, vec![v])?;
                }
                b'e' | 0x90 => {
                    // APPENDS / ADDITEMS
                    let items = self.pop_mark()?;
                    append(self.top()?, items)?;
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    set_items(self.top()?, vec![k, v])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    set_items(self.top()?, items)?;
                }
                // --- memo
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?;
                }
                b'p' => {
                    let l = self.line()?;
                    let k = l.parse::<u32>().map_err(|_| format!("data.pkl: bad memo key {l:?}"))?;
                    self.memo_put(k)?;
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| "data.pkl: memo too large")?;
                    self.memo_put(k)?;
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'j' => {
                    let k = self.u32()?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                b'g' => {
                    let l = self.line()?;
                    let k = l.parse::<u32>().map_err(|_| format!("data.pkl: bad memo key {l:?}"))?;
                    let v = self.memo_get(k)?;
                    self.stack.push(v);
                }
                // --- globals and object construction (whitelisted, see `resolve_global`)
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_global(module, name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (&module, &name) {
                        (Value::Str(m), Value::Str(n)) => {
                            let (m, n) = (m.clone(), n.clone());
                            self.push_global(&m, &n)?;
                        }
                        _ => return Err("data.pkl: STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let args = match args {
                        Value::Tuple(t) => t.0.clone(),
                        v => return Err(format!("data.pkl: REDUCE arguments must be a tuple, found {}", v.kind_name())),
                    };
                    let v = call(&func, args)?;
                    self.stack.push(v);
                }
                0x81 | 0x92 => {
                    // NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args)`; only empty containers.
                    if op == 0x92 {
                        self.pop()?; // kwargs
                    }
                    self.pop()?; // args
                    let cls = self.pop()?;
                    let v = match cls {
                        Value::Global(Global::OrderedDict | Global::Dict) => Value::Dict(Default::default()),
                        Value::Global(Global::Set) => Value::Set(Default::default()),
                        Value::Global(Global::List) => Value::List(Default::default()),
                        v => return Err(format!("data.pkl: cannot instantiate {} with NEWOBJ", describe(&v))),
                    };
                    self.stack.push(v);
                }
                b'b' => {
                    // BUILD: Python would call `__setstate__`; plain data needs no state (an
                    // OrderedDict's `_metadata`, a tensor's Python attributes), so it is dropped.
                    self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = persistent_load(&pid)?;
                    self.stack.push(v);
                }
                b'P' => return Err("data.pkl: text persistent ids are not used by torch.save".into()),
                b'i' | b'o' => {
                    return Err("refusing to load: the pickle instantiates an arbitrary class (INST/OBJ), which is not tensor storage".into())
                }
                0x82..=0x84 => return Err("refusing to load: the pickle uses the copyreg extension registry".into()),
                b'S' => {
                    // STRING (protocol 0, e.g. Python 2's default `pickle.dump`): a quoted repr.
                    let l = self.raw_line()?;
                    let v = unquote_py_str(l).ok_or("data.pkl: bad STRING literal")?;
                    self.stack.push(Value::Str(String::from_utf8_lossy(&v).as_ref().into()));
                }
                b'V' => {
                    // UNICODE (protocol 0): raw-unicode-escape, i.e. latin-1 plus \uXXXX / \UXXXXXXXX.
                    let l = self.raw_line()?;
                    let v = raw_unicode_unescape(l).ok_or("data.pkl: bad UNICODE literal")?;
                    self.stack.push(Value::Str(v.into()));
                }
                0x96..=0x98 => return Err("data.pkl: out-of-band pickle buffers are not supported".into()),
                _ => return Err(format!("data.pkl: unknown pickle opcode 0x{op:02x} at byte {}", self.pos - 1)),
            }
        }
    }
}

/// The bytes of a protocol-0 `STRING` argument: a Python `repr` in single or double quotes with
/// backslash escapes (Python's `codecs.escape_decode`; unknown escapes stay as written).
fn unquote_py_str(l: &[u8]) -> Option<Vec<u8>> {
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let q = *l.first()?;
    if l.len() < 2 || !(q == b'\'' || q == b'"') || *l.last()? != q {
        return None;
    }
    let body = &l[1..l.len() - 1];
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let b = body[i];
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let e = *body.get(i)?;
        i += 1;
        match e {
            b'\\' | b'\'' | b'"' => out.push(e),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'v' => out.push(11),
            b'\n' => {}
            b'x' => {
                let h = std::str::from_utf8(body.get(i..i + 2)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + (d - b'0') as u32;
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            _ => {
                out.push(b'\\');
                out.push(e);
            }
        }
    }
    Some(out)
}

/// Python's `raw-unicode-escape` decoding: bytes are latin-1 code points except `\uXXXX` and
/// `\UXXXXXXXX`.
fn raw_unicode_unescape(l: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(l.len());
    let mut i = 0;
    while i < l.len() {
        let b = l[i];
        if b == b'\\' && matches!(l.get(i + 1), Some(b'u' | b'U')) {
            let n = if l[i + 1] == b'u' { 4 } else { 8 };
            let h = std::str::from_utf8(l.get(i + 2..i + 2 + n)?).ok()?;
            out.push(char::from_u32(u32::from_str_radix(h, 16).ok()?)?);
            i += 2 + n;
        } else {
            out.push(b as char);
            i += 1;
        }
    }
    Some(out)
}

fn long_from_bytes(b: &[u8]) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() > 8 {
        // Fits in i64 only if the extra bytes are pure sign extension.
        let neg = b[b.len() - 1] & 0x80 != 0;
        let fill = if neg { 0xff } else { 0 };
        if b[8..].iter().any(|&x| x != fill) || ((b[7] & 0x80 != 0) != neg) {
            return Value::BigInt;
        }
        return long_from_bytes(&b[..8]);
    }
    let neg = b[b.len() - 1] & 0x80 != 0;
    let mut buf = if neg { [0xffu8; 8] } else { [0u8; 8] };
    buf[..b.len()].copy_from_slice(b);
    Value::Int(i64::from_le_bytes(buf))
}

fn describe(v: &Value) -> String {
    match v {
        Value::Global(g) => format!("{g:?}"),
        v => v.kind_name().to_string(),
    }
}

fn dict_from_flat(items: Vec<Value>) -> Result<Value, String> {
    if !items.len().is_multiple_of(2) {
        return Err("data.pkl: odd number of dict items".into());
    }
    let mut d = DictObj::default();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.insert(k, v);
    }
    Ok(Value::Dict(Rc::new(RefCell::new(d))))
}

fn append(target: &mut Value, items: Vec<Value>) -> Result<(), String> {
    match target {
        Value::List(l) | Value::Set(l) => {
            l.borrow_mut().0.extend(items);
            Ok(())
        }
        v => Err(format!("data.pkl: APPEND to a {}", v.kind_name())),
    }
}

fn set_items(target: &mut Value, items: Vec<Value>) -> Result<(), String> {
    let Value::Dict(d) = target else {
        return Err(format!("data.pkl: SETITEM on a {}", target.kind_name()));
    };
    if !items.len().is_multiple_of(2) {
        return Err("data.pkl: odd number of dict items".into());
    }
    let mut d = d.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        d.insert(k, v);
    }
    Ok(())
}

/// torch.save's persistent id of a storage: `('storage', StorageType, key, location, numel)`.
fn persistent_load(pid: &Value) -> Result<Value, String> {
    let items = match pid {
        Value::Tuple(t) => t.0.clone(),
        v => return Err(format!("data.pkl: persistent id is a {}, expected a tuple", v.kind_name())),
    };
    match items.as_slice() {
        [Value::Str(tag), ty, Value::Str(key), _location, numel] if tag.as_ref() == "storage" => {
            let kind = match ty {
                Value::Global(Global::StorageType(k)) => *k,
                Value::Global(Global::Dtype(k)) => *k,
                v => return Err(format!("data.pkl: storage type is {}, expected a torch.*Storage", describe(v))),
            };
            if key.contains("..") || key.contains('/') || key.contains('\\') {
                return Err(format!("data.pkl: storage key {key:?} is not a plain record name"));
            }
            let numel = numel.int("storage size")?;
            if numel < 0 {
                return Err(format!("data.pkl: storage {key} has negative size {numel}"));
            }
            Ok(Value::Storage(Rc::new(StorageRef { kind, key: key.to_string(), numel })))
        }
        _ => Err("data.pkl: unrecognised persistent id (expected ('storage', type, key, location, numel))".into()),
    }
}

/// "Call" an accepted global. Every branch is a fixed reconstruction of plain data.
fn call(func: &Value, args: Vec<Value>) -> Result<Value, String> {
    let Value::Global(g) = func else {
        return Err(format!("data.pkl: REDUCE on a {}, which is not callable", func.kind_name()));
    };
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::None);
    match g {
        Global::OrderedDict | Global::Dict => match args.as_slice() {
            [] => Ok(Value::Dict(Default::default())),
            [Value::Dict(d)] => {
                let mut out = DictObj::default();
                for (k, v) in &d.borrow().items {
                    out.insert(k.clone(), v.clone());
                }
                Ok(Value::Dict(Rc::new(RefCell::new(out))))
            }
            [seq] => {
                let pairs = seq.seq().ok_or("data.pkl: dict() of a non-sequence")?;
                let mut out = DictObj::default();
                for p in pairs {
                    match p.seq().as_deref() {
                        Some([k, v]) => out.insert(k.clone(), v.clone()),
                        _ => return Err("data.pkl: dict() item is not a pair".into()),
                    }
                }
                Ok(Value::Dict(Rc::new(RefCell::new(out))))
            }
            _ => Err("data.pkl: dict() with more than one argument".into()),
        },
        Global::Set | Global::List | Global::Tuple => {
            let items = match args.as_slice() {
                [] => Vec::new(),
                [seq] => seq.seq().ok_or("data.pkl: container built from a non-sequence")?,
                _ => return Err("data.pkl: container built from several arguments".into()),
            };
            Ok(match g {
                Global::Set => Value::Set(Rc::new(RefCell::new(Items(items)))),
                Global::List => Value::List(Rc::new(RefCell::new(Items(items)))),
                _ => Value::Tuple(Rc::new(Items(items))),
            })
        }
        Global::RebuildTensor | Global::RebuildTensorV2 | Global::RebuildTensorV3 => {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, dtype][, metadata])
            if args.len() < 4 {
                return Err("data.pkl: _rebuild_tensor with fewer than 4 arguments".into());
            }
            let Value::Storage(storage) = &args[0] else {
                return Err(format!("data.pkl: tensor built on a {}, not a storage", args[0].kind_name()));
            };
            let mut kind = storage.kind;
            if *g == Global::RebuildTensorV3 {
                match arg(6) {
                    Value::Global(Global::Dtype(k)) => kind = k,
                    v => return Err(format!("data.pkl: _rebuild_tensor_v3 dtype is {}", describe(&v))),
                }
            }
            let size = args[2].ints("tensor size")?;
            let stride = args[3].ints("tensor stride")?;
            if size.len() != stride.len() {
                return Err(format!("data.pkl: tensor size {size:?} and stride {stride:?} differ in rank"));
            }
            Ok(Value::Tensor(Rc::new(TensorRef {
                storage: storage.clone(),
                kind,
                offset: args[1].int("storage offset")?,
                size,
                stride,
            })))
        }
        Global::RebuildParameter => match arg(0) {
            t @ Value::Tensor(_) => Ok(t),
            v => Err(format!("data.pkl: _rebuild_parameter of a {}", v.kind_name())),
        },
        Global::RebuildFromTypeV2 => {
            // (func, new_type, args, state): a tensor subclass; only torch.Tensor / Parameter.
            match arg(1) {
                Value::Global(Global::TensorClass | Global::ParameterClass) => {}
                v => return Err(format!("data.pkl: tensor of type {} is not supported", describe(&v))),
            }
            let inner = match arg(2) {
                Value::Tuple(t) => t.0.clone(),
                v => return Err(format!("data.pkl: _rebuild_from_type_v2 arguments are a {}", v.kind_name())),
            };
            let r = call(&arg(0), inner)?;
            match r {
                Value::Tensor(_) => Ok(r),
                v => Err(format!("data.pkl: _rebuild_from_type_v2 produced a {}", v.kind_name())),
            }
        }
        Global::CodecsEncode => match (arg(0), arg(1)) {
            (Value::Str(s), Value::Str(enc)) if matches!(enc.as_ref(), "latin1" | "latin-1") => {
                if s.chars().any(|c| c as u32 > 0xff) {
                    return Err("data.pkl: latin1 text out of range".into());
                }
                Ok(Value::Bytes)
            }
            _ => Err("data.pkl: unsupported _codecs.encode call".into()),
        },
        Global::TensorClass | Global::ParameterClass | Global::StorageType(_) | Global::Dtype(_) => {
            Err(format!("data.pkl: {g:?} called directly is not supported"))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain-data pickles

/// A pickled Python object made only of plain data, as [`read_plain_pickle`] returns it.
#[derive(Clone, Debug, PartialEq)]
pub enum PlainValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<PlainValue>),
    Tuple(Vec<PlainValue>),
    /// Items in insertion order (a repeated key keeps its first position and last value).
    Dict(Vec<(PlainValue, PlainValue)>),
}

impl PlainValue {
    /// The value of string key `key` of a dict.
    pub fn get(&self, key: &str) -> Option<&PlainValue> {
        match self {
            PlainValue::Dict(items) => {
                items.iter().find(|(k, _)| matches!(k, PlainValue::Str(s) if s == key)).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            PlainValue::None => "None",
            PlainValue::Bool(_) => "bool",
            PlainValue::Int(_) => "int",
            PlainValue::Float(_) => "float",
            PlainValue::Str(_) => "str",
            PlainValue::List(_) => "list",
            PlainValue::Tuple(_) => "tuple",
            PlainValue::Dict(_) => "dict",
        }
    }
}

/// Read a standalone pickle stream (any protocol) holding plain data only — `None`, bools,
/// ints, floats, strings, lists, tuples, dicts — with the same interpreter as checkpoints, so no
/// pickled code runs (e.g. the RRSIS-D `refs(unc).p` annotation list). Sets become lists. Bytes,
/// integers beyond i64, tensors and storages are errors, as is nesting deeper than 64 levels.
/// Error messages call the stream `data.pkl`, the name the interpreter uses for checkpoints.
pub fn read_plain_pickle(bytes: &[u8]) -> Result<PlainValue, String> {
    let top = Vm::new(bytes).run()?;
    let mut budget = MAX_PLAIN_NODES;
    to_plain(&top, 0, &mut budget)
}

/// Memo references let a small pickle share one container many times (a list of two copies of a
/// list of two copies of …); copying into owned values would then grow exponentially.
const MAX_PLAIN_NODES: usize = 1 << 26;

fn to_plain(v: &Value, depth: usize, budget: &mut usize) -> Result<PlainValue, String> {
    if depth > MAX_DEPTH {
        return Err(format!("objects nested more than {MAX_DEPTH} deep (cyclic?)"));
    }
    if *budget == 0 {
        return Err(format!("the pickle expands to more than {MAX_PLAIN_NODES} values"));
    }
    *budget -= 1;
    let mut seq = |items: &[Value]| items.iter().map(|x| to_plain(x, depth + 1, budget)).collect::<Result<Vec<_>, _>>();
    Ok(match v {
        Value::None => PlainValue::None,
        Value::Bool(b) => PlainValue::Bool(*b),
        Value::Int(i) => PlainValue::Int(*i),
        Value::Float(f) => PlainValue::Float(*f),
        Value::Str(s) => PlainValue::Str(s.to_string()),
        Value::Tuple(t) => PlainValue::Tuple(seq(&t.0)?),
        Value::List(l) | Value::Set(l) => PlainValue::List(seq(&l.borrow().0)?),
        Value::Dict(d) => {
            let d = d.borrow();
            let mut out = Vec::with_capacity(d.items.len());
            for (k, v) in &d.items {
                out.push((to_plain(k, depth + 1, budget)?, to_plain(v, depth + 1, budget)?));
            }
            PlainValue::Dict(out)
        }
        other => return Err(format!("the pickle holds a {}, which is not plain data", describe(other))),
    })
}

// ---------------------------------------------------------------------------------------------
// State-dict selection and tensor decoding

const MAX_DEPTH: usize = 64;
/// Largest view (in elements) allowed to exceed the size of its storage.
const MAX_EXPANDED: usize = 1 << 28;

fn select_root(top: &Value, root_key: Option<&str>) -> Result<Value, String> {
    let Some(key) = root_key else {
        if let Value::Dict(d) = top {
            let d = d.borrow();
            for key in ["model", "state_dict"] {
                if let Some(v @ Value::Dict(_)) = d.get_str(key) {
                    let mut probe = Vec::new();
                    if flatten(v.clone(), "", 0, &mut probe).is_ok() && !probe.is_empty() {
                        return Ok(v.clone());
                    }
                }
            }
        }
        return Ok(top.clone());
    };
    let Value::Dict(d) = top else {
        return Err(format!("cannot select entry {key:?}: the saved object is a {}, not a dict", top.kind_name()));
    };
    if let Some(v) = d.borrow().get_str(key) {
        return Ok(v.clone());
    }
    // A dotted path into nested dicts.
    let mut cur = top.clone();
    for part in key.split('.') {
        let next = match &cur {
            Value::Dict(d) => d.borrow().get_str(part).cloned(),
            _ => None,
        };
        cur = next.ok_or_else(|| {
            let keys: Vec<String> = d
                .borrow()
                .items
                .iter()
                .filter_map(|(k, _)| match k {
                    Value::Str(s) => Some(format!("{s:?}")),
                    _ => None,
                })
                .collect();
            format!("the checkpoint has no entry {key:?} (top-level keys: {})", keys.join(", "))
        })?;
    }
    Ok(cur)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn flatten(v: Value, prefix: &str, depth: usize, out: &mut Found) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("{prefix}: objects nested more than {MAX_DEPTH} deep (cyclic?)"));
    }
    match v {
        Value::Tensor(t) => {
            if prefix.is_empty() {
                return Err("the saved object is a single tensor, not a state dict".into());
            }
            out.push((prefix.to_string(), t));
        }
        Value::Dict(d) => {
            let items = d.borrow().items.clone();
            for (k, v) in items {
                let name = match k {
                    Value::Str(s) => s.to_string(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                flatten(v, &join(prefix, &name), depth + 1, out)?;
            }
        }
        Value::List(_) | Value::Tuple(_) => {
            for (i, v) in v.seq().unwrap().into_iter().enumerate() {
                flatten(v, &join(prefix, &i.to_string()), depth + 1, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Tensors found in the saved object, by flattened name.
type Found = Vec<(String, Rc<TensorRef>)>;

/// Read each needed storage once, then cut every tensor out of it as contiguous row-major f32.
fn materialize(found: Found, archive: &mut Archive) -> Result<TensorMap, String> {
    // Group by storage so that a blob shared by several tensors is decoded once and dropped
    // before the next one is read (bounded peak memory on multi-GB checkpoints).
    let mut groups: Vec<((String, Kind), Found)> = Vec::new();
    let mut at: HashMap<(String, Kind), usize> = HashMap::new();
    for (name, t) in found {
        let id = (t.storage.key.clone(), t.kind);
        let i = *at.entry(id.clone()).or_insert_with(|| {
            groups.push((id, Vec::new()));
            groups.len() - 1
        });
        groups[i].1.push((name, t));
    }
    let mut out = TensorMap::new();
    let mut decoded_bytes = 0u64;
    for ((key, kind), tensors) in groups {
        let storage = &tensors[0].1.storage;
        let mut blob = archive.entry(&format!("data/{key}"))?;
        // The view's element count: the declared storage size, or (v3 dtype views) the blob's.
        let elems = if kind == storage.kind {
            let n = storage.numel as usize;
            if n.checked_mul(kind.size()).is_none_or(|b| b > blob.len()) {
                return Err(format!(
                    "storage data/{key}: {} bytes, but {n} {kind:?} values were declared (truncated archive?)",
                    blob.len()
                ));
            }
            n
        } else {
            blob.len() / kind.size()
        };
        blob.truncate(elems * kind.size());
        if archive.big_endian && kind.size() > 1 {
            for c in blob.chunks_exact_mut(kind.size()) {
                c.reverse();
            }
        }
        let values = decode(kind.dtype(), &blob).ok_or_else(|| format!("storage data/{key}: undecodable dtype"))?;
        drop(blob);
        archive.storage_bytes += values.len() as u64 * 4;
        let single = tensors.len() == 1;
        let mut values = Some(values);
        for (name, t) in tensors {
            let shape: Vec<usize> = t
                .size
                .iter()
                .map(|&s| usize::try_from(s).map_err(|_| format!("{name}: negative size {:?}", t.size)))
                .collect::<Result<_, _>>()?;
            let src = values.as_ref().unwrap();
            // Refuse before allocating: the tensors decoded so far plus this one against the budget.
            let numel = shape.iter().try_fold(1u64, |a, &s| a.checked_mul(s as u64)).unwrap_or(u64::MAX);
            decoded_bytes = decoded_bytes.saturating_add(numel.saturating_mul(4));
            let limit = archive.storage_bytes.saturating_mul(VIEW_RATIO).saturating_add(archive.slack);
            if decoded_bytes > limit {
                return Err(format!(
                    "{name}: the tensors would decode to more than {limit} bytes, {VIEW_RATIO}× the {} bytes of storage \
                     in the archive + {} MiB (many views of one storage: a decompression bomb?)",
                    archive.storage_bytes,
                    archive.slack >> 20
                ));
            }
            let whole = shape.iter().try_fold(1usize, |a, &s| a.checked_mul(s)) == Some(src.len());
            let data = if single && whole && t.offset == 0 && is_contiguous(&t.size, &t.stride) {
                values.take().unwrap()
            } else {
                gather(src, t.offset, &t.size, &t.stride).map_err(|m| format!("{name}: {m}"))?
            };
            if out.insert(name.clone(), HostTensor::new(shape, data)).is_some() {
                return Err(format!("two tensors are named {name} after flattening nested dicts"));
            }
        }
    }
    Ok(out)
}

fn is_contiguous(size: &[i64], stride: &[i64]) -> bool {
    let mut expected = 1i64;
    for (&s, &st) in size.iter().zip(stride).rev() {
        if s != 1 && st != expected {
            return false;
        }
        expected = expected.saturating_mul(s);
    }
    true
}

/// Copy the strided view `(offset, size, stride)` of `src` into a contiguous row-major buffer.
fn gather(src: &[f32], offset: i64, size: &[i64], stride: &[i64]) -> Result<Vec<f32>, String> {
    let mut n: usize = 1;
    for &s in size {
        let s = usize::try_from(s).map_err(|_| format!("negative size {size:?}"))?;
        n = n.checked_mul(s).ok_or_else(|| format!("size {size:?} overflows"))?;
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    // Zero strides (expanded tensors) let a tiny storage describe a huge view; refuse views that
    // would allocate far more than the checkpoint itself holds.
    if n > src.len() && n > MAX_EXPANDED {
        return Err(format!("view of {n} elements over a storage of {} elements is too large", src.len()));
    }
    if offset < 0 || stride.iter().any(|&s| s < 0) {
        return Err(format!("negative storage offset {offset} or stride {stride:?}"));
    }
    // Highest element the view touches must lie inside the storage.
    let mut last = offset as i128;
    for (&s, &st) in size.iter().zip(stride) {
        last += (s as i128 - 1) * st as i128;
    }
    if last >= src.len() as i128 {
        return Err(format!(
            "view (offset {offset}, size {size:?}, stride {stride:?}) reaches element {last} of a storage of {} elements",
            src.len()
        ));
    }
    let offset = offset as usize;
    if is_contiguous(size, stride) {
        return Ok(src[offset..offset + n].to_vec());
    }
    let rank = size.len();
    let size: Vec<usize> = size.iter().map(|&s| s as usize).collect();
    let stride: Vec<usize> = stride.iter().map(|&s| s as usize).collect();
    let mut out = Vec::with_capacity(n);
    let mut idx = vec![0usize; rank];
    let mut pos = offset;
    // The innermost dimension is copied in a tight loop; the others advance like an odometer.
    let (inner, inner_stride) = if rank == 0 { (1, 0) } else { (size[rank - 1], stride[rank - 1]) };
    let outer = rank.saturating_sub(1);
    loop {
        for j in 0..inner {
            out.push(src[pos + j * inner_stride]);
        }
        let mut d = outer;
        loop {
            if d == 0 {
                return Ok(out);
            }
            d -= 1;
            idx[d] += 1;
            pos += stride[d];
            if idx[d] < size[d] {
                break;
            }
            pos -= stride[d] * size[d];
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal protocol-2 pickle writer mirroring the opcodes torch.save emits.
    #[derive(Default)]
    struct P(Vec<u8>);
    impl P {
        fn op(&mut self, b: &[u8]) -> &mut Self {
            self.0.extend_from_slice(b);
            self
        }
        fn s(&mut self, s: &str) -> &mut Self {
            self.0.push(b'X');
            self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
            self.0.extend_from_slice(s.as_bytes());
            self
        }
        fn i(&mut self, v: i64) -> &mut Self {
            self.0.push(b'J');
            self.0.extend_from_slice(&(v as i32).to_le_bytes());
            self
        }
        fn global(&mut self, m: &str, n: &str) -> &mut Self {
            self.0.push(b'c');
            self.0.extend_from_slice(format!("{m}\n{n}\n").as_bytes());
            self
        }
        fn ints(&mut self, v: &[i64]) -> &mut Self {
            self.op(b"(");
            for &x in v {
                self.i(x);
            }
            self.op(b"t")
        }
        /// `_rebuild_tensor_v2(('storage', FloatStorage, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`
        fn tensor(&mut self, ty: &str, key: &str, numel: i64, offset: i64, size: &[i64], stride: &[i64]) -> &mut Self {
            self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
            self.op(b"(").s("storage").global("torch", ty).s(key).s("cpu").i(numel).op(b"tQ");
            self.i(offset).ints(size).ints(stride).op(b"\x89");
            self.global("collections", "OrderedDict").op(b")R");
            self.op(b"tR")
        }
    }

    fn archive(pickle: &[u8], blobs: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        w.start_file("archive/data.pkl", opts).unwrap();
        w.write_all(pickle).unwrap();
        w.start_file("archive/byteorder", opts).unwrap();
        w.write_all(b"little").unwrap();
        for (k, b) in blobs {
            w.start_file(format!("archive/data/{k}"), opts).unwrap();
            w.write_all(b).unwrap();
        }
        w.start_file("archive/version", opts).unwrap();
        w.write_all(b"3\n").unwrap();
        w.finish().unwrap().into_inner()
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// `{"model": OrderedDict(w=<2x3 transposed view>, b=<view at offset 4>), "epoch": 3}`
    fn sample() -> Vec<u8> {
        let mut p = P::default();
        p.op(b"\x80\x02}q\x00(").s("model");
        p.global("collections", "OrderedDict").op(b")Rq\x01(");
        // storage 0 = [0..6); w = storage viewed (3,2) then transposed → size (2,3) stride (1,2)
        p.s("w").tensor("FloatStorage", "0", 6, 0, &[2, 3], &[1, 2]);
        p.s("b").tensor("FloatStorage", "0", 6, 4, &[2], &[1]);
        // Close the OrderedDict's items, BUILD it with an (ignored) state, close the top-level
        // items, then add a non-tensor entry with SETITEM.
        p.op(b"u}bu");
        p.s("epoch").i(3).op(b"s.");
        archive(&p.0, &[("0", f32s(&[0., 1., 2., 3., 4., 5.]))])
    }

    #[test]
    fn refuses_a_record_that_inflates_far_beyond_the_file() {
        // 4 MB of zeros deflate to a few KB: far more than 4× the file.
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("w").tensor("FloatStorage", "0", 1 << 20, 0, &[1 << 20], &[1]).op(b"u.");
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        w.start_file("archive/data.pkl", stored).unwrap();
        w.write_all(&p.0).unwrap();
        w.start_file("archive/data/0", deflated).unwrap();
        w.write_all(&vec![0u8; 4 << 20]).unwrap();
        let bomb = w.finish().unwrap().into_inner();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let e = read_limited(&bomb, "bomb.pt", None, 0).unwrap_err().to_string();
        assert!(e.contains("inflates beyond the limit"), "{e}");
        // Within the real slack (256 MiB) the same archive is an ordinary checkpoint.
        assert_eq!(read(&bomb, "bomb.pt").unwrap()["w"].data.len(), 1 << 20);
    }

    #[test]
    fn refuses_many_full_views_of_one_storage() {
        let views = |n: usize| {
            let mut p = P::default();
            p.op(b"\x80\x02}(");
            for i in 0..n {
                p.s(&format!("w{i}")).tensor("FloatStorage", "0", 1000, 0, &[1000], &[1]);
            }
            p.op(b"u.");
            archive(&p.0, &[("0", f32s(&[1.0; 1000]))])
        };
        // Tied weights (two names, one storage) decode; five copies exceed 2× the storage.
        assert_eq!(read_limited(&views(2), "tied.pt", None, 0).unwrap().len(), 2);
        let e = read_limited(&views(5), "views.pt", None, 0).unwrap_err().to_string();
        assert!(e.contains("would decode to more than"), "{e}");
    }

    #[test]
    fn reads_views_of_a_shared_storage() {
        let m = read(&sample(), "t.pt").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m["w"].shape, vec![2, 3]);
        assert_eq!(m["w"].data, vec![0., 2., 4., 1., 3., 5.]);
        assert_eq!(m["b"].data, vec![4., 5.]);
    }

    #[test]
    fn explicit_root_and_flattening() {
        let m = read_with_root(&sample(), "t.pt", Some("model")).unwrap();
        assert!(m.contains_key("w"));
        // Without a recognised root key, nested dicts are flattened with dotted names.
        let bytes = sample();
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("net").op(b"}(").s("w").tensor("FloatStorage", "0", 6, 0, &[6], &[1]).op(b"uu.");
        let nested = archive(&p.0, &[("0", f32s(&[1., 2., 3., 4., 5., 6.]))]);
        let m = read(&nested, "n.pt").unwrap();
        assert_eq!(m["net.w"].data, vec![1., 2., 3., 4., 5., 6.]);
        assert!(read_with_root(&bytes, "t.pt", Some("optimizer")).unwrap_err().to_string().contains("\"model\""));
    }

    #[test]
    fn refuses_foreign_globals_by_name() {
        let mut p = P::default();
        p.op(b"\x80\x02").global("posix", "system").s("echo hi").op(b"\x85R.");
        let e = read(&archive(&p.0, &[]), "evil.pt").unwrap_err().to_string();
        assert!(e.contains("`posix.system`") && e.contains("refusing"), "{e}");
        // STACK_GLOBAL (protocol 4) is checked the same way.
        let mut p = P::default();
        p.op(b"\x80\x04").s("builtins").s("eval").op(b"\x93").s("1").op(b"\x85R.");
        let e = read(&archive(&p.0, &[]), "evil.pt").unwrap_err().to_string();
        assert!(e.contains("`builtins.eval`"), "{e}");
    }

    #[test]
    fn damaged_archives_are_errors() {
        let good = sample();
        for cut in [10, good.len() / 2, good.len() - 5] {
            assert!(read(&good[..cut], "cut.pt").is_err());
        }
        // Missing storage blob.
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("w").tensor("FloatStorage", "7", 2, 0, &[2], &[1]).op(b"u.");
        let e = read(&archive(&p.0, &[]), "m.pt").unwrap_err().to_string();
        assert!(e.contains("data/7") && e.contains("missing"), "{e}");
        // Blob shorter than declared.
        let e = read(&archive(&p.0, &[("7", vec![0; 4])]), "m.pt").unwrap_err().to_string();
        assert!(e.contains("data/7"), "{e}");
        // View outside its storage.
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("w").tensor("FloatStorage", "0", 2, 1, &[2], &[1]).op(b"u.");
        assert!(read(&archive(&p.0, &[("0", f32s(&[1., 2.]))]), "m.pt").is_err());
        // Truncated pickle.
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("w");
        assert!(read(&archive(&p.0, &[]), "m.pt").is_err());
    }

    #[test]
    fn legacy_and_foreign_files_are_explained() {
        let legacy = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.";
        assert!(is_legacy_torch_pickle(legacy));
        let e = read(legacy, "old.pt").unwrap_err().to_string();
        assert!(e.contains("_use_new_zipfile_serialization=False"), "{e}");
        assert!(read(b"hello", "x").unwrap_err().to_string().contains("not a torch zip"));
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // 2 million nested 1-tuples, then a dict holding the chain: an error or a clean result,
        // never a crash (the test thread has a small stack).
        let mut p = P::default();
        p.op(b"\x80\x02}(").s("x").op(b")");
        p.0.extend(std::iter::repeat_n(0x85u8, 2_000_000));
        p.op(b"u.");
        let r = read(&archive(&p.0, &[]), "deep.pt");
        assert!(r.unwrap_err().to_string().contains("nested more than"));
        // The same chain left on the stack by a truncated pickle.
        p.0.truncate(p.0.len() - 2);
        assert!(read(&archive(&p.0, &[]), "deep.pt").is_err());
        // A chain discarded by POP in the middle of a valid pickle.
        let mut p = P::default();
        p.op(b"\x80\x02)");
        p.0.extend(std::iter::repeat_n(0x85u8, 2_000_000));
        p.op(b"0}(").s("w").tensor("FloatStorage", "0", 1, 0, &[], &[]).op(b"u.");
        let m = read(&archive(&p.0, &[("0", f32s(&[9.]))]), "pop.pt").unwrap();
        assert_eq!(m["w"].data, vec![9.]);
    }

    #[test]
    fn strided_gather() {
        let src: Vec<f32> = (0..24).map(|x| x as f32).collect();
        // (2,3,4) permuted to (4,2,3): strides (1,12,4)
        let g = gather(&src, 0, &[4, 2, 3], &[1, 12, 4]).unwrap();
        let mut want = Vec::new();
        for a in 0..4 {
            for b in 0..2 {
                for c in 0..3 {
                    want.push((a + 12 * b + 4 * c) as f32);
                }
            }
        }
        assert_eq!(g, want);
        assert_eq!(gather(&src, 5, &[], &[]).unwrap(), vec![5.]);
        assert_eq!(gather(&src, 0, &[3, 2], &[0, 1]).unwrap(), vec![0., 1., 0., 1., 0., 1.]);
        assert!(gather(&src, 20, &[2, 3], &[3, 1]).is_err());
        // A stride-0 view of astronomic size is refused before allocating.
        assert!(gather(&src, 0, &[1 << 20, 1 << 20], &[0, 0]).unwrap_err().contains("too large"));
        assert!(gather(&src, 0, &[1 << 40, 1 << 40], &[0, 0]).unwrap_err().contains("overflows"));
    }

    #[test]
    fn long_decoding() {
        assert!(matches!(long_from_bytes(&[0xff]), Value::Int(-1)));
        assert!(matches!(long_from_bytes(&[0x00, 0x01]), Value::Int(256)));
        assert!(matches!(long_from_bytes(&[1, 0, 0, 0, 0, 0, 0, 0, 0]), Value::Int(1)));
        assert!(matches!(long_from_bytes(&[0; 8].iter().chain(&[1]).copied().collect::<Vec<_>>()), Value::BigInt));
    }

    #[test]
    fn plain_data_pickles() {
        // [{"a": 1, "f": 0.5, "l": [True, None, "x"]}, (2,)] with a shared memo entry.
        let mut p = P::default();
        p.op(b"\x80\x02](}(").s("a").i(1).s("f").op(b"G").op(&0.5f64.to_be_bytes()).s("l");
        p.op(b"(\x88N").s("x").op(b"lq\x01uK\x02\x85h\x01e.");
        let v = read_plain_pickle(&p.0).unwrap();
        let PlainValue::List(items) = &v else { panic!("{v:?}") };
        assert_eq!(items[0].get("a"), Some(&PlainValue::Int(1)));
        assert_eq!(items[0].get("f"), Some(&PlainValue::Float(0.5)));
        let l = PlainValue::List(vec![PlainValue::Bool(true), PlainValue::None, PlainValue::Str("x".into())]);
        assert_eq!(items[0].get("l"), Some(&l));
        assert_eq!(items[1], PlainValue::Tuple(vec![PlainValue::Int(2)]));
        assert_eq!(items[2], l);
        // Foreign globals are still refused by name; tensors are not plain data.
        let mut bad = P::default();
        bad.op(b"\x80\x02").global("os", "system").op(b".");
        assert!(read_plain_pickle(&bad.0).unwrap_err().contains("os.system"));
        let mut t = P::default();
        t.op(b"\x80\x02").tensor("FloatStorage", "0", 1, 0, &[1], &[1]).op(b".");
        assert!(read_plain_pickle(&t.0).unwrap_err().contains("not plain data"));
    }

    #[test]
    fn protocol_0_strings() {
        // Python 2 `pickle.dumps([{'sent': 'it\'s', u'raw': u'caf\xe9 \u2192'}], 0)`.
        let pkl = b"(lp0\n(dp1\nS'sent'\np2\nS\"it's\"\np3\nsVraw\np4\nVcaf\xe9 \\u2192\np5\nsa.";
        let v = read_plain_pickle(pkl).unwrap();
        let PlainValue::List(items) = &v else { panic!("{v:?}") };
        assert_eq!(items[0].get("sent"), Some(&PlainValue::Str("it's".into())));
        assert_eq!(items[0].get("raw"), Some(&PlainValue::Str("caf\u{e9} \u{2192}".into())));
        assert_eq!(unquote_py_str(b"'a\\nb\\x41\\101\\q'").unwrap(), b"a\nbAA\\q");
        assert!(unquote_py_str(b"'open").is_none());
    }
}
