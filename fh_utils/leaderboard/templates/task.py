# The code cells of a packaged task.ipynb (fh_utils.leaderboard.template reads this file as text). Each "# %%" line
# starts a cell ("tags=[...]": its tags). When a submission is packaged, __function_name__, __model_dir__,
# __code_archive__ and __dataset_env__ are replaced by its values, and "__key__" and "__model_name__" by its strings;
# everything else is the notebook's code as it stands here.

# %% tags=["parameters"]
KEY = "__key__"  # the team's key on the platform; empty: a local dry run that never uploads
MODEL_NAME = "__model_name__"  # the name the leaderboard shows for this submission


# %%
def __function_name__():
    """Predict the test set; every import inside the function, as the template requires."""
    import argparse
    import os
    import sys

    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default=os.environ.get("__dataset_env__", "/aif/Dataset"))
    parser.add_argument("--model-dir", default="./__model_dir__")
    args, _ = parser.parse_known_args()
    code = os.path.abspath("./__code_archive__")
    if code not in sys.path:
        sys.path.insert(0, code)
    from fh_utils.inference.aif import predict_test_set

    return predict_test_set(args.model_dir, args.dataset, code=code)


# %%
def submit():
    return __function_name__


# %%
if __name__ == "__main__":
    if KEY:
        import aifactory.score as aif

        aif.submit(model_name=MODEL_NAME, key=KEY, func=submit)
    else:
        import os
        import sys

        sys.path.insert(0, os.path.abspath("./__code_archive__"))
        from fh_utils.inference.aif import dry_run

        dry_run(submit, "./__model_dir__")
