//! Integration and property tests of the marshalling layer: round trips of random nested
//! values, hostile input (never a panic, never an absurd allocation), signature mismatch
//! messages, the manual's polymorphic dispatch, the slides' example program, and the group
//! agreement check (deep signatures).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use vsync::args;
use vsync::dataplane::MemberId;
use vsync::marshal::{
    compare, Address, ArgList, Args, DispatchError, Encode, Handlers, Marshal, MarshalError,
    Reader, RegistryError, Reply, SignatureSet, TypeDesc, TypeRegistry, View,
};

// ---------------------------------------------------------------------------------------
// A global allocator that records the largest single allocation made by the current thread,
// so hostile-input tests can assert that no absurd buffer is ever requested.

struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = LARGEST.try_with(|m| m.set(m.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// Runs `f` and returns the largest single allocation it made on this thread.
fn largest_allocation(f: impl FnOnce()) -> usize {
    LARGEST.with(|m| m.set(0));
    f();
    LARGEST.with(|m| m.get())
}

// ---------------------------------------------------------------------------------------
// User types.

vsync::marshal_struct! {
    /// The slides' `tuple` class, registered with type id 0.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Tuple { pub rank: i32, pub value: i32 }
    type_id = 0
}

vsync::marshal_struct! {
    /// The manual's `GRPair` (an [AutoMarshaled] class with type id 123).
    #[derive(Clone, Debug, PartialEq)]
    pub struct GrPair { pub gaddr: Address, pub rate: i32 }
    type_id = 123
}

vsync::marshal_struct! {
    /// A user struct with a map and nested user types.
    #[derive(Clone, Debug, PartialEq, Default)]
    pub struct Catalog {
        pub owner: Address,
        pub entries: BTreeMap<String, (i32, Option<Address>)>,
        pub pairs: Vec<GrPair>,
        pub tags: HashMap<u16, Vec<u8>>,
    }
    type_id = 124
}

#[derive(Clone, Debug, PartialEq)]
pub enum Tree {
    Leaf(i64),
    Node(Vec<Tree>),
    Labelled { label: String, tree: Box<Tree> },
    Empty,
}
vsync::impl_marshal! {
    enum Tree { Leaf(v), Node(children), Labelled { label, tree }, Empty } type_id = 125
}

// ---------------------------------------------------------------------------------------
// Strategies.

fn address() -> impl Strategy<Value = Address> {
    any::<u64>().prop_map(Address)
}

fn view() -> impl Strategy<Value = View> {
    (
        any::<u64>(),
        any::<u32>(),
        prop::collection::vec(address(), 0..6),
        prop::collection::vec(address(), 0..3),
        prop::collection::vec(address(), 0..3),
    )
        .prop_map(|(group, id, members, joined, left)| View {
            group,
            id,
            members,
            joined,
            left,
        })
}

fn gr_pair() -> impl Strategy<Value = GrPair> {
    (address(), any::<i32>()).prop_map(|(gaddr, rate)| GrPair { gaddr, rate })
}

fn catalog() -> impl Strategy<Value = Catalog> {
    (
        address(),
        prop::collection::btree_map(".{0,12}", (any::<i32>(), prop::option::of(address())), 0..6),
        prop::collection::vec(gr_pair(), 0..4),
        prop::collection::hash_map(
            any::<u16>(),
            prop::collection::vec(any::<u8>(), 0..20),
            0..5,
        ),
    )
        .prop_map(|(owner, entries, pairs, tags)| Catalog {
            owner,
            entries,
            pairs,
            tags,
        })
}

fn tree() -> impl Strategy<Value = Tree> {
    let leaf = prop_oneof![any::<i64>().prop_map(Tree::Leaf), Just(Tree::Empty)];
    leaf.prop_recursive(5, 40, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Tree::Node),
            (".{0,8}", inner).prop_map(|(label, t)| Tree::Labelled {
                label,
                tree: Box::new(t)
            }),
        ]
    })
}

/// Round trip plus canonical re-encoding plus type code consistency.
fn round_trip<T: Marshal + PartialEq + std::fmt::Debug>(v: &T) -> Result<(), TestCaseError> {
    let bytes = v.to_bytes();
    let back = T::from_bytes(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, v);
    prop_assert_eq!(back.to_bytes(), bytes);
    let mut code = Vec::new();
    T::write_type_code(&mut code);
    prop_assert_eq!(code, T::type_desc().code());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Round trips.

proptest! {
    #[test]
    fn round_trip_scalars(
        a in any::<(u8, u16, u32, u64, u128, usize)>(),
        b in any::<(i8, i16, i32, i64, i128, isize)>(),
        c in any::<(bool, char, String)>(),
    ) {
        round_trip(&a)?;
        round_trip(&b)?;
        round_trip(&c)?;
    }

    #[test]
    fn round_trip_floats_bit_exact(x in any::<u32>(), y in any::<u64>()) {
        let (f, d) = (f32::from_bits(x), f64::from_bits(y));
        let back = <(f32, f64)>::from_bytes(&(f, d).to_bytes()).unwrap();
        prop_assert_eq!((back.0.to_bits(), back.1.to_bits()), (x, y));
    }

    #[test]
    fn round_trip_nested_collections(
        v in prop::collection::vec(
            prop::collection::btree_map(".{0,6}", (any::<i32>(), prop::option::of(address())), 0..4),
            0..4,
        ),
        h in prop::collection::hash_map(any::<u64>(), prop::collection::vec(any::<u8>(), 0..64), 0..8),
        o in prop::option::of(prop::collection::vec(prop::option::of(any::<i16>()), 0..8)),
        arr in any::<[u32; 4]>(),
        bytes in any::<[u8; 16]>(),
    ) {
        round_trip(&v)?;
        prop_assert_eq!(
            Vec::<BTreeMap<String, (i32, Option<Address>)>>::type_desc().to_string(),
            "Vec<Map<String, (i32, Option<Address>)>>"
        );
        round_trip(&h)?;
        round_trip(&o)?;
        round_trip(&arr)?;
        round_trip(&bytes)?;
        round_trip(&(v, h, o, arr, bytes))?;
    }

    #[test]
    fn round_trip_user_types_and_views(c in catalog(), t in tree(), v in view()) {
        round_trip(&c)?;
        round_trip(&t)?;
        round_trip(&v)?;
        round_trip(&(Box::new(t), vec![c], Arc::new(v)))?;
    }

    #[test]
    fn hash_map_encoding_is_deterministic(
        entries in prop::collection::btree_map(".{0,8}", any::<i64>(), 0..30),
    ) {
        // Two hash maps with different random hashers and insertion orders.
        let mut forward = HashMap::new();
        for (k, v) in &entries {
            forward.insert(k.clone(), *v);
        }
        let mut backward = HashMap::new();
        for (k, v) in entries.iter().rev() {
            backward.insert(k.clone(), *v);
        }
        prop_assert_eq!(forward.to_bytes(), backward.to_bytes());
        prop_assert_eq!(BTreeMap::<String, i64>::from_bytes(&forward.to_bytes()).unwrap(), entries);
    }

    #[test]
    fn arg_lists_round_trip(
        name in ".{0,20}", n in any::<i32>(), m in any::<i64>(),
        blob in prop::collection::vec(any::<u8>(), 0..300),
        c in catalog(),
    ) {
        let a = args!(name.as_str(), n, m);
        let wire = ArgList::parse(a.as_bytes()).unwrap();
        prop_assert_eq!(wire.decode::<(String, i32, i64)>().unwrap(), (name.clone(), n, m));
        let b = args!(&blob, &c, Some(n));
        let wire = ArgList::parse(b.as_bytes()).unwrap();
        let (blob2, c2, n2): (Vec<u8>, Catalog, Option<i32>) = wire.decode().unwrap();
        prop_assert_eq!((blob2, c2, n2), (blob, c, Some(n)));
    }
}

// ---------------------------------------------------------------------------------------
// Hostile input: arbitrary bytes never panic and never allocate more than a small multiple of
// the input (plus the 64 KiB preallocation cap).

fn bound(input_len: usize) -> usize {
    64 * 1024 + 256 * input_len
}

fn decode_everything(bytes: &[u8]) {
    let _ = u64::from_bytes(bytes);
    let _ = i128::from_bytes(bytes);
    let _ = String::from_bytes(bytes);
    let _ = Vec::<u8>::from_bytes(bytes);
    let _ = Vec::<String>::from_bytes(bytes);
    let _ = Vec::<Vec<Vec<u8>>>::from_bytes(bytes);
    let _ = Vec::<[u64; 0]>::from_bytes(bytes);
    let _ = Vec::<Vec<[u8; 0]>>::from_bytes(bytes);
    let _ = BTreeMap::<String, Vec<Option<Address>>>::from_bytes(bytes);
    let _ = HashMap::<u32, String>::from_bytes(bytes);
    let _ = <(bool, char, f64, Option<View>)>::from_bytes(bytes);
    let _ = View::from_bytes(bytes);
    let _ = Catalog::from_bytes(bytes);
    let _ = Tree::from_bytes(bytes);
    let _ = Vec::<Tree>::from_bytes(bytes);
    let _ = SignatureSet::from_bytes(bytes);
    let _ = TypeDesc::read_code(&mut Reader::new(bytes));
    if let Ok(a) = ArgList::parse(bytes) {
        let _ = a.signature().to_string();
        let _ = a.decode::<(String, i32)>();
        let _ = a.decode::<(Vec<Tree>,)>();
        let _ = a.decode::<(Catalog, View)>();
        let mut h = Handlers::new();
        h.on(1, |_: String, _: i32| {});
        h.on(1, |_: Vec<Tree>| 1u8);
        let _ = h.dispatch(1, &a);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_nor_overallocate(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let largest = largest_allocation(|| decode_everything(&bytes));
        prop_assert!(largest <= bound(bytes.len()), "allocated {largest} bytes for {} input bytes", bytes.len());
    }

    #[test]
    fn hostile_lengths_never_overallocate(
        prefix in prop::collection::vec(any::<u8>(), 0..3),
        len in any::<u64>(),
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        // A plausible header, then a huge declared length, then a little data.
        let mut bytes = prefix;
        let mut w = vsync::marshal::Writer::new();
        w.put_varint(len);
        bytes.extend_from_slice(w.as_bytes());
        bytes.extend_from_slice(&tail);
        let largest = largest_allocation(|| {
            decode_everything(&bytes);
            let mut arglist = vec![1u8, 1, 0x20, 0x0f];
            arglist.extend_from_slice(&bytes);
            decode_everything(&arglist);
        });
        prop_assert!(largest <= bound(bytes.len() + 4), "allocated {largest} bytes");
    }

    #[test]
    fn mutated_valid_encodings_never_panic(c in catalog(), t in tree(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        for mut bytes in [args!(&c, &t).into_bytes(), c.to_bytes(), t.to_bytes()] {
            for (i, b) in &flips {
                let at = i.index(bytes.len());
                bytes[at] ^= b | 1;
            }
            let largest = largest_allocation(|| decode_everything(&bytes));
            prop_assert!(largest <= bound(bytes.len()));
        }
    }
}

#[test]
fn allocation_tracker_sees_large_allocations() {
    let big = largest_allocation(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(1 << 20))));
    assert!(big >= 1 << 20);
    // A claimed 2^27-element vector of strings allocates at most the 64 KiB cap up front.
    let mut bytes = vec![0x80, 0x80, 0x80, 0x40];
    bytes.extend([0u8; 16]);
    let mut result = None;
    let used = largest_allocation(|| result = Some(Vec::<String>::from_bytes(&bytes)));
    assert!(matches!(result, Some(Err(MarshalError::Truncated { .. }))));
    assert!(used <= 64 * 1024, "{used}");
}

#[test]
fn deeply_nested_hostile_input_is_refused_not_overflowed() {
    // Node([Node([Node(...)])]) a million levels deep: index 1, count 1, repeated.
    let bytes: Vec<u8> = std::iter::repeat_n([1u8, 1], 1_000_000).flatten().collect();
    assert_eq!(Tree::from_bytes(&bytes), Err(MarshalError::DepthLimit(100)));
    // Type codes nested too deeply.
    let code = vec![0x20u8; 100_000];
    assert!(matches!(
        TypeDesc::read_code(&mut Reader::new(&code)),
        Err(MarshalError::DepthLimit(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Signature checks with readable messages.

#[test]
fn wrong_argument_types_fail_at_the_sender_naming_the_expected_signature() {
    const UPDATE: u32 = 1;
    let mut h = Handlers::new();
    h.on(UPDATE, |_name: String, _n: i32| {});
    // The sender checks before sending.
    let e = h.check(UPDATE, &args!("User number", 7i64)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no handler for request code 1 takes (String, i64); its handlers take (String, i32)"
    );
    assert!(matches!(e, DispatchError::NoMatchingSignature { .. }));
    assert!(h.check_args::<(&str, i32)>(UPDATE).is_ok());
    assert!(h.check(UPDATE, &args!("User number", 7i32)).is_ok());
    // Decoding with the wrong tuple type.
    let e = args!("User number", 7i64)
        .decode::<(String, i32)>()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "signature mismatch: expected (String, i32) but the message carries (String, i64)"
    );
}

#[test]
fn user_types_are_named_in_mismatch_messages() {
    let a = args!(vec![Tuple { rank: 1, value: 2 }]);
    let e = a.decode::<(Tuple,)>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "signature mismatch: expected (Tuple#0) but the message carries (Vec<Tuple#0>)"
    );
    let e = a.decode::<(Vec<GrPair>,)>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "signature mismatch: expected (Vec<GrPair#123>) but the message carries (Vec<#0>)"
    );
}

#[test]
fn replies_of_the_wrong_type_fail_at_the_caller() {
    let mut h = Handlers::new();
    h.on(1, |arg: i32| vec![arg; 2]);
    let Reply::Value(reply) = h.dispatch(1, &args!(5)).unwrap() else {
        panic!("expected a reply")
    };
    // Sent back as bytes, parsed by the caller.
    let reply = ArgList::parse(reply.as_bytes()).unwrap();
    assert_eq!(reply.decode_one::<Vec<i32>>().unwrap(), [5, 5]);
    assert_eq!(
        reply.decode_one::<i32>().unwrap_err().to_string(),
        "signature mismatch: expected (i32) but the message carries (Vec<i32>)"
    );
}

// ---------------------------------------------------------------------------------------
// The manual's polymorphic UPDATE example and its LOOKUP query.

#[test]
fn manual_polymorphic_update_dispatches_by_signature() {
    const LOOKUP: u32 = 0;
    const UPDATE: u32 = 1;
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut g = Handlers::new();
    let s = seen.clone();
    g.on(UPDATE, move |name: String, val: i32| {
        s.lock()
            .unwrap()
            .push(format!("Update {name}, new value {val}"))
    });
    let s = seen.clone();
    g.on(UPDATE, move |id: i32, val: i32| {
        s.lock()
            .unwrap()
            .push(format!("Id-based update {id}, new value {val}"))
    });
    let my_rank = 2i32;
    g.on(LOOKUP, move |who: String| {
        assert_eq!(who, "John Smith");
        my_rank
    });

    for n in 0..10 {
        let msg = args!(format!("User number {n}"), n * 100);
        // The bytes travel; the receiver parses and dispatches.
        let wire = ArgList::parse(msg.as_bytes()).unwrap();
        assert_eq!(g.dispatch(UPDATE, &wire).unwrap(), Reply::None);
    }
    for n in 10..20 {
        g.dispatch(UPDATE, &args!(n, n * 100)).unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 20);
    assert_eq!(seen[3], "Update User number 3, new value 300");
    assert_eq!(seen[15], "Id-based update 15, new value 1500");

    let Reply::Value(r) = g.dispatch(LOOKUP, &args!("John Smith")).unwrap() else {
        panic!()
    };
    assert_eq!(r.decode_one::<i32>().unwrap(), 2);

    // A third shape of UPDATE has no handler: the error lists both registered signatures.
    let e = g.dispatch(UPDATE, &args!(1.5f64, 2)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no handler for request code 1 takes (f64, i32); its handlers take (String, i32) or (i32, i32)"
    );
}

// ---------------------------------------------------------------------------------------
// The slides' example program: UPDATE(int rank, int n), LOOKUP(int arg) replying List<int>,
// the view handler's View, and the [AutoMarshalled] `tuple` class with type id 0.

struct Member {
    rank: usize,
    handlers: Handlers,
    database: Arc<Mutex<Vec<Tuple>>>,
}

fn slides_member(rank: usize) -> Member {
    const UPDATE: u32 = 0;
    const LOOKUP: u32 = 1;
    let database = Arc::new(Mutex::new(Vec::new()));
    let mut g = Handlers::new();
    let db = database.clone();
    g.on(UPDATE, move |rank: i32, n: i32| {
        db.lock().unwrap().push(Tuple { rank, value: n });
    });
    let db = database.clone();
    g.on(UPDATE, move |t: Tuple| db.lock().unwrap().push(t));
    let db = database.clone();
    g.on(LOOKUP, move |arg: i32| {
        let answer: Vec<i32> = db
            .lock()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(i, tp)| i % 3 == rank && tp.rank == arg)
            .map(|(_, tp)| tp.value)
            .collect();
        answer
    });
    g.on(100, move |v: View| {
        v.rank_of(Address::new(rank as u32 + 1, 1))
            .map(|r| r as u32)
    });
    Member {
        rank,
        handlers: g,
        database,
    }
}

#[test]
fn slides_example_program() {
    const UPDATE: u32 = 0;
    const LOOKUP: u32 = 1;
    let mut members: Vec<Member> = (0..3).map(slides_member).collect();

    // Every member agrees on the signatures (joins are accepted).
    let mut reg = TypeRegistry::new();
    reg.register::<Tuple>().unwrap();
    let sets: Vec<SignatureSet> = members
        .iter()
        .map(|m| m.handlers.signature_set(&reg).unwrap())
        .collect();
    assert!(compare(&sets[0], &sets[1]).is_ok() && compare(&sets[1], &sets[2]).is_ok());
    assert_eq!(sets[0].digest(), sets[2].digest());

    // The view with three members.
    let view = View {
        group: 0xf00,
        id: 2,
        members: (1..=3).map(|p| Address::new(p, 1)).collect(),
        joined: vec![Address::new(3, 1)],
        left: vec![],
    };
    for m in &mut members {
        let Reply::Value(r) = m.handlers.dispatch(100, &args!(&view)).unwrap() else {
            panic!()
        };
        assert_eq!(r.decode_one::<Option<u32>>().unwrap(), Some(m.rank as u32));
    }

    // Each member OrderedSends five updates; every member delivers all 15 in one order.
    let mut order = Vec::new();
    for n in 0..5 {
        for rank in 0..3 {
            order.push(args!(rank, n));
        }
    }
    // And a tuple object, sent as a registered user type.
    order.push(args!(Tuple { rank: 1, value: 5 }));
    for msg in &order {
        let wire = msg.as_bytes().to_vec();
        for m in &mut members {
            m.handlers
                .dispatch(UPDATE, &ArgList::from_bytes(wire.clone()).unwrap())
                .unwrap();
        }
    }
    for m in &members {
        assert_eq!(m.database.lock().unwrap().len(), 16);
    }

    // OrderedQuery(ALL, LOOKUP, n): results is a List<List<int>>, one list per member.
    for n in 0..3 {
        let mut results: Vec<Vec<i32>> = Vec::new();
        for m in &mut members {
            let Reply::Value(r) = m.handlers.dispatch(LOOKUP, &args!(n)).unwrap() else {
                panic!()
            };
            results.push(r.decode_one().unwrap());
        }
        let mut all: Vec<i32> = results.concat();
        all.sort();
        let expected: Vec<i32> = if n == 1 {
            vec![0, 1, 2, 3, 4, 5]
        } else {
            vec![0, 1, 2, 3, 4]
        };
        assert_eq!(
            all, expected,
            "every tuple with rank {n} is scanned exactly once"
        );
        // The collected replies themselves marshal as List<List<int>>.
        let bytes = results.to_bytes();
        assert_eq!(Vec::<Vec<i32>>::from_bytes(&bytes).unwrap(), results);
    }
}

// ---------------------------------------------------------------------------------------
// Group agreement: deep signatures (fixing the manual's shallow check).

mod member_a {
    vsync::marshal_struct! {
        /// Foo as member A defines it: an int and a double.
        pub struct Foo { pub n: i32, pub d: f64 }
        type_id = 10
    }
}

mod member_b {
    vsync::marshal_struct! {
        /// Bar, a type member B uses inside Foo.
        pub struct Bar { pub label: String }
        type_id = 11
    }
    vsync::marshal_struct! {
        /// Foo as member B defines it: same name and id, one field a Bar.
        pub struct Foo { pub n: i32, pub d: Bar }
        type_id = 10
    }
}

mod member_c {
    vsync::marshal_struct! {
        /// Same as member A's, but with id 12.
        pub struct Foo { pub n: i32, pub d: f64 }
        type_id = 12
    }
}

fn set_with<F: Marshal + 'static>(extra: bool) -> SignatureSet {
    const UPDATE: u32 = 3;
    let mut h = Handlers::new();
    h.on(UPDATE, |_who: String, _foos: Vec<F>| {});
    if extra {
        h.on(7, |_: u8| {});
    }
    let mut reg = TypeRegistry::new();
    reg.register_desc(&F::type_desc()).unwrap();
    h.signature_set(&reg).unwrap()
}

#[test]
fn joiner_with_a_differently_defined_type_is_refused_naming_the_difference() {
    let a = set_with::<member_a::Foo>(false);
    let b = set_with::<member_b::Foo>(false);
    assert_ne!(a.digest(), b.digest());
    // The joiner's set travels as bytes.
    let b = SignatureSet::from_bytes(&b.to_bytes()).unwrap();
    let e = compare(&a, &b).unwrap_err();
    assert_eq!(
        e.to_string(),
        "handler signatures differ: \
         code 3: (String, Vec<Foo#10{n:i32,d:f64}>) vs (String, Vec<Foo#10{n:i32,d:Bar#11{label:String}}>); \
         type 10: Foo#10{n:i32,d:f64} vs Foo#10{n:i32,d:Bar#11}"
    );
}

#[test]
fn joiner_with_other_type_ids_or_codes_is_refused() {
    let a = set_with::<member_a::Foo>(false);
    let c = set_with::<member_c::Foo>(true);
    let e = compare(&a, &c).unwrap_err();
    assert_eq!(
        e.to_string(),
        "handler signatures differ: \
         code 3: (String, Vec<Foo#10{n:i32,d:f64}>) vs (String, Vec<Foo#12{n:i32,d:f64}>); \
         code 7: handled only on the other side (u8); \
         type Foo: id 10 vs id 12"
    );
}

#[test]
fn digest_is_independent_of_registration_order() {
    let sigs = [
        (0u32, <(i32, i32)>::signature()),
        (0, <(Tuple,)>::signature()),
        (1, <(i32,)>::signature()),
        (2, <(Catalog, Vec<Tree>)>::signature()),
        (2, <(String, i32, i64)>::signature()),
    ];
    let build = |order: &[usize]| {
        let mut s = SignatureSet::new();
        for &i in order {
            s.add(sigs[i].0, &sigs[i].1).unwrap();
        }
        s
    };
    let reference = build(&[0, 1, 2, 3, 4]);
    for order in [[4, 3, 2, 1, 0], [2, 0, 4, 1, 3], [3, 4, 0, 2, 1]] {
        let s = build(&order);
        assert_eq!(s.digest(), reference.digest());
        assert_eq!(s.to_bytes(), reference.to_bytes());
    }
    let back = SignatureSet::from_bytes(&reference.to_bytes()).unwrap();
    assert_eq!(back, reference);
    assert!(compare(&reference, &back).is_ok());
    // Deep signatures survive the trip.
    assert_eq!(
        back.signatures(2)[0],
        <(Catalog, Vec<Tree>)>::signature(),
        "{:#}",
        back.signatures(2)[0]
    );
}

#[test]
fn unregistered_and_conflicting_types_are_reported() {
    let mut h = Handlers::new();
    h.on(4, |_: Vec<GrPair>| {});
    let e = h.signature_set(&TypeRegistry::new()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "type GrPair#123{gaddr:Address,rate:i32} used in request code 4 (Vec<GrPair#123>) is not registered"
    );
    let mut reg = TypeRegistry::new();
    reg.register::<member_a::Foo>().unwrap();
    let e = reg.register::<member_b::Foo>().unwrap_err();
    assert!(matches!(e, RegistryError::DuplicateId { .. }));
    assert_eq!(
        e.to_string(),
        "type id 10 is already bound to Foo#10{n:i32,d:f64}; cannot bind it to Foo#10{n:i32,d:Bar#11}"
    );
}

#[test]
fn address_converts_from_member_id() {
    let m = MemberId::new(5656, 3);
    let a = Address::from(m);
    assert_eq!((a.process(), a.incarnation()), (5656, 3));
    assert_eq!(MemberId::from(a), m);
    let v = View {
        group: 1,
        id: 0,
        members: vec![a],
        joined: vec![a],
        left: vec![],
    };
    assert_eq!(v.rank_of(a), Some(0));
    assert_eq!(View::from_bytes(&v.to_bytes()).unwrap(), v);
}

proptest! {
    #[test]
    fn signature_sets_round_trip_and_compare_equal(
        picks in prop::collection::vec((0u32..6, 0usize..6), 0..12),
    ) {
        let sigs = [
            <(i32, i32)>::signature(),
            <(String, i32)>::signature(),
            <(Tuple,)>::signature(),
            <(Catalog,)>::signature(),
            <(Vec<Tree>, View)>::signature(),
            <(Option<GrPair>, [u8; 4])>::signature(),
        ];
        let mut s = SignatureSet::new();
        for (code, i) in &picks {
            s.add(*code, &sigs[*i]).unwrap();
        }
        let bytes = s.to_bytes();
        let back = SignatureSet::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &s);
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert!(compare(&s, &back).is_ok());
        // Reversed registration order: same digest.
        let mut r = SignatureSet::new();
        for (code, i) in picks.iter().rev() {
            r.add(*code, &sigs[*i]).unwrap();
        }
        prop_assert_eq!(r.digest(), s.digest());
    }
}
