"""One sampling run on a patched MODEL: the patch (install, run start and end), the frozen plan, the run state, each call's info, and the parts each call goes through."""
