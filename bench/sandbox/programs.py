"""The programs every sandbox benchmark runs: small, realistic, half of them broken."""

PROGRAMS = {
    "use_after_move": """
fn total(v: Vec<u32>) -> u32 { v.iter().sum() }
fn main() {
    let v = vec![1, 2, 3];
    let t = total(v);
    println!("{} {:?}", t, v);
}
""",
    "borrow_conflict": """
fn main() {
    let mut scores = vec![3, 1, 2];
    let first = &scores[0];
    scores.push(4);
    println!("{}", first);
}
""",
    "struct_traits": """
use std::collections::HashMap;
#[derive(Debug, Clone, PartialEq)]
struct Item { name: String, qty: u32 }
trait Describe { fn describe(&self) -> String; }
impl Describe for Item {
    fn describe(&self) -> String { format!("{} x{}", self.name, self.qty) }
}
pub fn inventory(items: &[Item]) -> HashMap<String, u32> {
    let mut map = HashMap::new();
    for it in items { *map.entry(it.name.clone()).or_insert(0) += it.qty; }
    map
}
fn main() {
    let items = vec![Item { name: "bolt".into(), qty: 3 }, Item { name: "nut".into(), qty: 5 }];
    for it in &items { println!("{}", it.describe()); }
    println!("{:?}", inventory(&items));
}
#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn sums() {
        let items = vec![Item { name: "a".into(), qty: 1 }, Item { name: "a".into(), qty: 2 }];
        assert_eq!(inventory(&items)["a"], 3);
    }
}
""",
    "type_mismatch": """
fn parse(s: &str) -> Option<u32> { s.parse().ok() }
fn main() {
    let n: u32 = parse("42");
    println!("{}", n);
}
""",
    "iterators": """
pub fn evens_squared(v: &[i64]) -> Vec<i64> {
    v.iter().filter(|x| *x % 2 == 0).map(|x| x * x).collect()
}
fn main() { println!("{:?}", evens_squared(&[1, 2, 3, 4])); }
#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn works() { assert_eq!(evens_squared(&[1, 2, 3, 4]), vec![4, 16]); }
}
""",
    "missing_match_arm": """
enum Shape { Circle(f64), Square(f64), Tri(f64, f64) }
fn area(s: &Shape) -> f64 {
    match s {
        Shape::Circle(r) => 3.14 * r * r,
        Shape::Square(a) => a * a,
    }
}
fn main() { println!("{}", area(&Shape::Tri(1.0, 2.0))); }
""",
}
