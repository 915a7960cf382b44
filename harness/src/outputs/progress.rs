//! A one-line count of finished scenarios on stderr while a run goes on, only when
//! stderr is a terminal (a CI log or a file gets no carriage-return litter). It is
//! cleared before each result is printed and at the end, so it never mixes with them.

use std::io::{IsTerminal, Write};

pub struct Progress {
    total: usize,
    done: usize,
    shown: bool,
    on: bool,
}

impl Progress {
    pub fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            shown: false,
            on: std::io::stderr().is_terminal(),
        }
    }

    /// Removes the line, before something else is printed.
    pub fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.shown = false;
        }
    }

    /// Counts one more scenario finished and shows the count.
    pub fn finished_one(&mut self, name: &str) {
        self.done += 1;
        if self.on && self.done < self.total {
            let _ = write!(
                std::io::stderr(),
                "\r\x1b[2K[{}/{}] {name} done",
                self.done,
                self.total
            );
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
