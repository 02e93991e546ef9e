//! Criterion benches of the marshalling layer: encoding and decoding typical argument lists
//! (the manual's `(String, i32, i64)`, a 1 KiB byte vector, a user struct holding a map),
//! dispatching through a polymorphic handler table, and building/comparing the signature set
//! a joiner sends.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vsync::args;
use vsync::marshal::{
    compare, Address, ArgList, ArgsRef, Encode, Handlers, Marshal, SignatureSet, TypeRegistry,
};

vsync::marshal_struct! {
    #[derive(Clone, Debug, PartialEq)]
    pub struct Catalog {
        pub owner: Address,
        pub rate: i32,
        pub entries: BTreeMap<String, (i32, Option<Address>)>,
    }
    type_id = 1001
}

fn catalog(n: usize) -> Catalog {
    Catalog {
        owner: Address::new(7, 1),
        rate: 42,
        entries: (0..n)
            .map(|i| {
                let addr = (i % 2 == 0).then(|| Address::new(i as u32, 1));
                (format!("entry-{i:04}"), (i as i32 * 10, addr))
            })
            .collect(),
    }
}

fn arg_lists(c: &mut Criterion) {
    let mut g = c.benchmark_group("marshal");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));

    // The manual's UPDATE("User number 7", 7, 700).
    let name = String::from("User number 7");
    let small = args!(&name, 7i32, 700i64);
    g.throughput(Throughput::Bytes(small.as_bytes().len() as u64));
    g.bench_function("encode/(String, i32, i64)", |b| {
        b.iter(|| args!(black_box(name.as_str()), black_box(7i32), black_box(700i64)))
    });
    let wire = small.as_bytes().to_vec();
    g.bench_function("decode/(String, i32, i64)", |b| {
        b.iter(|| {
            let a = ArgsRef::parse(black_box(&wire)).unwrap();
            a.decode::<(String, i32, i64)>().unwrap()
        })
    });
    g.bench_function("parse_owned+decode/(String, i32, i64)", |b| {
        b.iter(|| {
            let a = ArgList::parse(black_box(&wire)).unwrap();
            a.decode::<(String, i32, i64)>().unwrap()
        })
    });

    let blob = vec![0xa5u8; 1024];
    let big = args!(&blob);
    g.throughput(Throughput::Bytes(big.as_bytes().len() as u64));
    g.bench_function("encode/(Vec<u8> 1 KiB)", |b| {
        b.iter(|| ArgList::one(black_box(&blob)))
    });
    let wire = big.as_bytes().to_vec();
    g.bench_function("decode/(Vec<u8> 1 KiB)", |b| {
        b.iter(|| {
            let a = ArgsRef::parse(black_box(&wire)).unwrap();
            a.decode_one::<Vec<u8>>().unwrap()
        })
    });

    for n in [4usize, 64] {
        let cat = catalog(n);
        let a = args!(&cat);
        g.throughput(Throughput::Bytes(a.as_bytes().len() as u64));
        g.bench_with_input(
            BenchmarkId::new("encode/(Catalog map entries)", n),
            &cat,
            |b, cat| b.iter(|| ArgList::one(black_box(cat))),
        );
        let wire = a.as_bytes().to_vec();
        g.bench_with_input(
            BenchmarkId::new("decode/(Catalog map entries)", n),
            &wire,
            |b, wire| {
                b.iter(|| {
                    let a = ArgsRef::parse(black_box(wire)).unwrap();
                    a.decode_one::<Catalog>().unwrap()
                })
            },
        );
    }
    g.finish();
}

fn dispatch(c: &mut Criterion) {
    let mut g = c.benchmark_group("handlers");
    g.measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    const UPDATE: u32 = 1;
    let mut h = Handlers::new();
    h.on(UPDATE, |name: String, val: i32| {
        black_box(name.len() as i64 + val as i64);
    });
    h.on(UPDATE, |id: i32, val: i32| id as i64 * val as i64);
    h.on(UPDATE, |cat: Catalog| cat.entries.len() as u32);
    let by_name = args!("User number 7", 700i32);
    let by_id = args!(7i32, 700i32);
    g.bench_function("dispatch/UPDATE(String, i32)", |b| {
        b.iter(|| h.dispatch(UPDATE, black_box(&by_name)).unwrap())
    });
    g.bench_function("dispatch/UPDATE(i32, i32) with reply", |b| {
        b.iter(|| h.dispatch(UPDATE, black_box(&by_id)).unwrap())
    });

    let mut reg = TypeRegistry::new();
    reg.register::<Catalog>().unwrap();
    g.bench_function("signature_set/build+encode+digest", |b| {
        b.iter(|| {
            let s = h.signature_set(&reg).unwrap();
            (s.digest(), s.to_bytes().len())
        })
    });
    let set = h.signature_set(&reg).unwrap();
    let bytes = set.to_bytes();
    g.bench_function("signature_set/decode+compare", |b| {
        b.iter(|| {
            let theirs = SignatureSet::from_bytes(black_box(&bytes)).unwrap();
            compare(&set, &theirs).is_ok()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().configure_from_args();
    targets = arg_lists, dispatch
}
criterion_main!(benches);
