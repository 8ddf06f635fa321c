# The two README commands: `make demo` (the whole product on embedded data) and `make test`.
.PHONY: setup demo test clean

setup:
	bash scripts/setup.sh

demo: setup
	bash scripts/demo.sh

test: setup
	bash scripts/test.sh

clean:
	rm -rf demo_out work_dirs
