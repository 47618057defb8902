//! The functions of a state's pending timers, by timer id.
//!
//! They live in a Lua table under small slot numbers that are reused (so in its array
//! part), with the timer id -> slot map in Rust. A table keyed by the timer ids
//! themselves (ever increasing, each removed when its timer fires or is cancelled)
//! degrades badly in Lua 5.4: when the number of live keys is a power of two, the
//! rehash makes the hash part exactly full, and then nearly every new key collides and
//! rehashes the whole table again (measured: a read timeout per message on 64
//! connections cost ≈ 14,000 instructions per message in `luaH_resize`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use mlua::{Function, Lua, Table, Value};

use crate::engine::IdHasher;

pub struct TimerFns {
    table: Table,
    slots: RefCell<HashMap<u64, i64, BuildHasherDefault<IdHasher>>>,
    free: RefCell<Vec<i64>>,
    next: Cell<i64>,
}

impl TimerFns {
    pub fn new(lua: &Lua) -> mlua::Result<TimerFns> {
        Ok(TimerFns {
            table: lua.create_table()?,
            slots: RefCell::default(),
            free: RefCell::default(),
            next: Cell::new(1),
        })
    }

    /// Keep `f` for timer `id`.
    pub fn insert(&self, id: u64, f: Function) -> mlua::Result<()> {
        let slot = match self.free.borrow_mut().pop() {
            Some(s) => s,
            None => {
                let s = self.next.get();
                self.next.set(s + 1);
                s
            }
        };
        // Stored first: if that fails (memory), the slot is simply not used.
        self.table.raw_set(slot, f)?;
        if let Some(old) = self.slots.borrow_mut().insert(id, slot) {
            self.release(old)?;
        }
        Ok(())
    }

    /// The function of timer `id`, removed; `None` if it has none (fired, cancelled).
    pub fn take(&self, id: u64) -> mlua::Result<Option<Function>> {
        let Some(slot) = self.slots.borrow_mut().remove(&id) else {
            return Ok(None);
        };
        let f: Value = self.table.raw_get(slot)?;
        self.release(slot)?;
        Ok(match f {
            Value::Function(f) => Some(f),
            _ => None,
        })
    }

    pub fn contains(&self, id: u64) -> bool {
        self.slots.borrow().contains_key(&id)
    }

    pub fn is_empty(&self) -> bool {
        self.slots.borrow().is_empty()
    }

    fn release(&self, slot: i64) -> mlua::Result<()> {
        self.table.raw_set(slot, Value::Nil)?;
        self.free.borrow_mut().push(slot);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TimerFns;
    use mlua::{Function, Lua};

    /// Timers come and go with ever-increasing ids: the Lua table's keys stay the
    /// slots of the most timers pending at once (its array part), and each id finds
    /// its own function until it is taken.
    #[test]
    fn slots_are_reused_and_ids_keep_their_functions() {
        let lua = Lua::new();
        let fns = TimerFns::new(&lua).unwrap();
        let f = |n: i64| -> Function { lua.create_function(move |_, ()| Ok(n)).unwrap() };
        let live = 64u64;
        for id in 1..=live {
            fns.insert(id, f(id as i64)).unwrap();
        }
        for id in live + 1..=10_000 {
            let old = id - live;
            let g = fns.take(old).unwrap().expect("pending");
            assert_eq!(g.call::<i64>(()).unwrap(), old as i64);
            assert!(fns.take(old).unwrap().is_none(), "taken once");
            fns.insert(id, f(id as i64)).unwrap();
        }
        assert_eq!(
            fns.next.get() - 1,
            live as i64,
            "no slot beyond the most pending"
        );
        assert_eq!(fns.table.raw_len(), live as usize);
        assert!(fns.contains(10_000) && !fns.contains(1));
        for id in 10_000 - live + 1..=10_000 {
            fns.take(id).unwrap().expect("pending");
        }
        assert!(fns.is_empty());
    }
}
