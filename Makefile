# The two commands (README): `make demo` runs MIKU-PAL on its demo clip, `make test` runs the tests.
# Both set everything up first on a fresh Debian machine (system packages, .venv, the project).
.PHONY: setup demo test bench screenshots package clean

SHARED_MODELS := $(abspath ../shared/models)

setup:
	@bash packaging/bootstrap.sh

demo: setup
	@if [ -n "$$DISPLAY" ]; then .venv/bin/mikupal demo; else .venv/bin/mikupal demo --no-gui; fi

test: setup
	.venv/bin/lint-imports --no-cache
	MIKUPAL_TEST_MODELS=$(SHARED_MODELS) xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m pytest -q

bench: setup
	@for b in bench/*.py; do echo "== $$b"; .venv/bin/python $$b; done

screenshots: setup
	xvfb-run -a -s "-screen 0 1600x1000x24" .venv/bin/python -m mikupal_gui.take_screenshots docs/screenshots

package: setup
	.venv/bin/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build/pyinstaller packaging/mikupal.spec
	dist/mikupal/mikupal --version

clean:
	rm -rf .venv build dist *.egg-info demo-project
