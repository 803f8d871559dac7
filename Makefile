# The two commands of the README:
#   make demo   set up the host and run the pack's main job
#   make test   set up the host and run the tests
.PHONY: host demo test bench

host:
	bash scripts/setup_host.sh

demo: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" scripts/main_job.py'

# The tests also drive ComfyUI's frontend in Debian's chromium (tests/test_frontend.py).
test:
	bash scripts/setup_host.sh --with-frontend
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" -m pytest tests -q -rs'

bench: host
	bash -c '. .host/env.sh && "$$FATEZERO_PYTHON" bench/bench_fatezero.py'
