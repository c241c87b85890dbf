module github.com/ferry-im/ferry

go 1.26
