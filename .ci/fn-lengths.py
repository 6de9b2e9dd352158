#!/usr/bin/env python3
"""List Rust functions longer than LIMIT lines (default 80) under the given folders, longest first.

A heuristic, not a parser: a function runs from its `fn` line to the brace that closes it (strings, char
literals and line comments are blanked first). Test code is skipped: files named `tests.rs`, folders named
`tests`, and everything from a `#[cfg(test)] mod …` to the end of a file (tests sit at the end here).
"""
import os
import re
import sys

LIMIT = int(os.environ.get("LIMIT", "80"))
FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)')
TEST_MOD = re.compile(r'^\s*#\[cfg\(test\)\]')


def code_of(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    return line.split('//')[0]


def without_tests(lines):
    for i, line in enumerate(lines):
        inline_mod = r'^\s*(pub\s+)?mod \w+\s*\{'
        if TEST_MOD.match(line) and any(re.match(inline_mod, l) for l in lines[i:i + 3]):
            return lines[:i]
    return lines


def long_functions(path):
    lines = without_tests(open(path, encoding='utf-8').read().split('\n'))
    found = []
    for start, line in enumerate(lines):
        m = FN.match(line)
        if not m or line.rstrip().endswith(';'):
            continue
        depth, opened, end = 0, False, start
        while end < len(lines):
            code = code_of(lines[end])
            depth += code.count('{') - code.count('}')
            opened = opened or '{' in code
            if (opened and depth <= 0) or (not opened and code.rstrip().endswith(';')):
                break
            end += 1
        length = end - start + 1
        if opened and length > LIMIT:
            found.append((length, path, start + 1, m.group(6)))
    return found


def main():
    found = []
    for folder in sys.argv[1:]:
        for root, _, files in os.walk(folder):
            if '/tests' in root or root.endswith('tests'):
                continue
            for name in files:
                if name.endswith('.rs') and name != 'tests.rs':
                    found += long_functions(os.path.join(root, name))
    for length, path, line, name in sorted(found, reverse=True):
        print(f"{length:5d} {path}:{line} {name}")


if __name__ == '__main__':
    main()
