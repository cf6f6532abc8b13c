from django.contrib.auth import login
from django.urls import reverse_lazy
from django.views.generic import FormView

from accounts import services
from accounts.forms import SignUpForm


class SignUpView(FormView):
    template_name = "registration/signup.html"
    form_class = SignUpForm
    success_url = reverse_lazy("chat:room-list")

    def form_valid(self, form):
        try:
            user = form.save()
        except services.UsernameTaken as taken:  # taken since the form checked
            form.add_error("username", str(taken))
            return self.form_invalid(form)
        login(self.request, user, backend="django.contrib.auth.backends.ModelBackend")
        return super().form_valid(form)
