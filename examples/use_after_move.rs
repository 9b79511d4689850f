// A broken program: `names` is moved into `count` and then used again (rustc: E0382).
// Try: nightshift check examples/use_after_move.rs
fn count(names: Vec<String>) -> usize {
    names.len()
}

fn main() {
    let names = vec![String::from("ada"), String::from("grace")];
    let n = count(names);
    println!("{n} names, the first is {}", names[0]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_names() {
        assert_eq!(count(vec![String::from("x")]), 1);
    }
}
