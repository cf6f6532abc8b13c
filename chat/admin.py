"""The moderator's console.

Staff use /admin/ and moderate every room. A room's owner and moderators use
/moderation/, the same pages limited to their rooms. Every change goes through
the services (chat.services, chat.moderation), so it is checked, audited and
reaches the people connected right now.
"""

from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from accounts.forms import AccountChangeForm
from chat import moderation, services
from chat.audit import REASON_MAX_LENGTH
from chat.exceptions import ChatError
from chat.models import AuditEntry, Membership, Message, Room
from chat.roles import is_staff, rooms_moderated_by


class ModerationSite(admin.AdminSite):
    site_header = "Chat moderation"
    site_title = "Chat moderation"
    index_title = "Your rooms"

    def has_permission(self, request: HttpRequest) -> bool:
        user = request.user
        return user.is_active and rooms_moderated_by(user).exists()


moderation_site = ModerationSite(name="moderation")


class ReasonActionForm(helpers.ActionForm):
    """The actions' bar, with the reason a moderator gives: it goes into the
    audit log, and a ban's reason is what the banned user is told."""

    reason = forms.CharField(required=False, max_length=REASON_MAX_LENGTH, label="Reason")


def run_service(modeladmin, request: HttpRequest, objects, service, success: str) -> None:
    """Apply `service(obj, reason)` to each object, with the reason given in the
    actions' bar, telling the moderator what failed and why."""
    reason = request.POST.get("reason", "").strip()[:REASON_MAX_LENGTH]
    done = 0
    for obj in objects:
        try:
            service(obj, reason)
        except ChatError as exc:
            modeladmin.message_user(request, f"{obj}: {exc.detail}", messages.ERROR)
        else:
            done += 1
    if done:
        modeladmin.message_user(request, success.format(count=done), messages.SUCCESS)


class RefusalsAsMessages:
    """A save the rules refuse (a service raising ChatError: removing the
    owner, muting a fellow moderator) comes back as the form's page with the
    reason, not a 500. The admin saves in one transaction, which the refusal
    rolls back whole."""

    def changeform_view(
        self, request: HttpRequest, object_id=None, form_url="", extra_context=None
    ) -> HttpResponse:
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except ChatError as exc:
            self.message_user(request, f"Not saved: {exc.detail}", messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


# The rooms of the rows listed, not every room: a moderator's filter must not
# name the private rooms they do not moderate.
ROOM_FILTER = ("room", admin.RelatedOnlyFieldListFilter)


class RoomScopedAdmin(RefusalsAsMessages, admin.ModelAdmin):
    """Staff see everything; room moderators only what belongs to their rooms.

    Nothing is deleted from here: hiding, banning and removing are actions.
    """

    action_form = ReasonActionForm

    room_path = "room"  # from this model to its Room

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if is_staff(request.user):
            return queryset
        rooms = rooms_moderated_by(request.user)
        return queryset.filter(**{f"{self.room_path}__in": rooms})

    def _moderates(self, request: HttpRequest, obj=None) -> bool:
        if is_staff(request.user):
            return True
        if obj is None:
            return rooms_moderated_by(request.user).exists()
        return self.get_queryset(request).filter(pk=obj.pk).exists()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._moderates(request)

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._moderates(request, obj)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return self._moderates(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


# --- rooms ----------------------------------------------------------------------------------


# Members edited on a room's own page, up to this many.
INLINE_MEMBERS_MAX = 100


class MembershipInlineForm(forms.ModelForm):
    """A row names its member for good: a new member is a new row. (The
    formset only adds and removes members; a changed name was dropped.)"""

    class Meta:
        model = Membership
        fields = ["user"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.fields["user"].disabled = True


class MembershipInline(admin.TabularInline):
    """Add and remove members (private rooms are managed here)."""

    model = Membership
    form = MembershipInlineForm
    extra = 0
    fields = ["user", "role", "muted_until", "is_banned", "joined_at"]
    readonly_fields = ["role", "muted_until", "is_banned", "joined_at"]
    autocomplete_fields = ["user"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("user")

    def has_add_permission(self, request: HttpRequest, obj=None) -> bool:
        return True

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return True

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return True


@admin.register(Room)
@admin.register(Room, site=moderation_site)
class RoomAdmin(RoomScopedAdmin):
    room_path = "pk"
    list_display = [
        "name",
        "slug",
        "is_private",
        "is_locked",
        "is_archived",
        "member_count",
        "created_by",
        "created_at",
    ]
    list_filter = ["is_private", "is_locked", "is_archived", "created_at"]
    search_fields = ["name", "slug", "description"]
    autocomplete_fields = ["created_by"]
    actions = ["lock", "unlock", "archive", "unarchive"]

    def get_inlines(self, request: HttpRequest, obj=None) -> list:
        # A big room's members would post more fields than Django takes
        # (DATA_UPLOAD_MAX_NUMBER_FIELDS): its page links to their list instead.
        if obj is not None and obj.member_count > INLINE_MEMBERS_MAX:
            return []
        return [MembershipInline]

    @admin.display(description="members")
    def members(self, room: Room) -> str:
        changelist = reverse(f"{self.admin_site.name}:chat_membership_changelist")
        return format_html(
            '<a href="{}?room__id__exact={}">{} members</a>', changelist, room.pk, room.member_count
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .select_related("created_by")
            .annotate(member_count=Count("memberships"))
        )

    def get_readonly_fields(self, request: HttpRequest, obj=None) -> list[str]:
        # Locking and archiving are actions (audited, broadcast), not form fields.
        fixed = ["is_locked", "is_archived", "created_by", "created_at"]
        if obj is not None:
            fixed += ["slug", "members"]
        if not is_staff(request.user) and obj is not None:
            fixed += ["name", "is_private"]
        return fixed

    def has_add_permission(self, request: HttpRequest) -> bool:
        return is_staff(request.user)

    def save_model(self, request: HttpRequest, obj: Room, form, change: bool) -> None:
        if not change:
            room = services.room_create(user=request.user, **form.cleaned_data)
            obj.pk = room.pk
            return
        changed = {name: form.cleaned_data[name] for name in form.changed_data}
        services.room_update(user=request.user, room=Room.objects.get(pk=obj.pk), **changed)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        """Members added and removed through the services (audited, and the
        removed one's sockets told), not formset.save(); what formset.save()
        would have recorded is recorded for the admin's history message."""
        room = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline_form in formset.forms:
            membership = inline_form.instance
            if inline_form in formset.deleted_forms and membership.pk:
                services.member_remove(actor=request.user, room=room, membership=membership)
                formset.deleted_objects.append(membership)
            elif not membership.pk and inline_form.has_changed():
                added, created = services.member_add(
                    actor=request.user, room=room, username=membership.user.get_username()
                )
                if created:
                    formset.new_objects.append(added)

    @admin.display(ordering="member_count", description="members")
    def member_count(self, room: Room) -> int:
        return room.member_count

    def _apply(self, request, rooms, service, success: str, **change) -> None:
        run_service(
            self,
            request,
            rooms,
            lambda room, reason: service(actor=request.user, room=room, reason=reason, **change),
            success,
        )

    @admin.action(description="Lock (read-only)")
    def lock(self, request, rooms) -> None:
        self._apply(request, rooms, moderation.room_set_locked, "{count} locked.", locked=True)

    @admin.action(description="Unlock")
    def unlock(self, request, rooms) -> None:
        self._apply(request, rooms, moderation.room_set_locked, "{count} unlocked.", locked=False)

    @admin.action(description="Archive")
    def archive(self, request, rooms) -> None:
        self._apply(
            request, rooms, moderation.room_set_archived, "{count} archived.", archived=True
        )

    @admin.action(description="Unarchive")
    def unarchive(self, request, rooms) -> None:
        self._apply(
            request, rooms, moderation.room_set_archived, "{count} unarchived.", archived=False
        )


# --- messages -------------------------------------------------------------------------------


class HiddenFilter(admin.SimpleListFilter):
    title = "visibility"
    parameter_name = "hidden"

    def lookups(self, request, model_admin):
        return [("no", "Visible"), ("yes", "Hidden")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(hidden_at__isnull=self.value() == "no")
        return queryset


@admin.register(Message)
@admin.register(Message, site=moderation_site)
class MessageAdmin(RoomScopedAdmin):
    list_display = ["id", "room", "user", "excerpt", "created_at", "is_hidden"]
    list_filter = [HiddenFilter, ROOM_FILTER, "created_at"]
    search_fields = ["body", "user__username", "room__slug"]
    list_select_related = ["user", "room"]
    date_hierarchy = "created_at"
    readonly_fields = ["room", "user", "body", "client_id", "created_at", "hidden_at", "hidden_by"]
    actions = ["hide", "unhide"]

    @admin.display(description="message")
    def excerpt(self, message: Message) -> str:
        return message.body if len(message.body) <= 80 else message.body[:79] + "…"

    @admin.display(boolean=True, description="hidden", ordering="hidden_at")
    def is_hidden(self, message: Message) -> bool:
        return message.hidden_at is not None

    @admin.action(description="Hide (remove from every screen)")
    def hide(self, request, queryset) -> None:
        run_service(
            self,
            request,
            queryset,
            lambda message, reason: moderation.message_hide(
                actor=request.user, message=message, reason=reason
            ),
            "{count} message(s) hidden.",
        )

    @admin.action(description="Unhide")
    def unhide(self, request, queryset) -> None:
        run_service(
            self,
            request,
            queryset,
            lambda message, reason: moderation.message_unhide(
                actor=request.user, message=message, reason=reason
            ),
            "{count} message(s) visible again.",
        )


# --- people ---------------------------------------------------------------------------------


@admin.register(Membership)
@admin.register(Membership, site=moderation_site)
class MembershipAdmin(RoomScopedAdmin):
    list_display = ["user", "room", "role", "muted_until", "is_banned", "joined_at"]
    list_filter = ["role", "is_banned", ROOM_FILTER]
    search_fields = ["user__username", "room__name", "room__slug"]
    list_select_related = ["user", "room"]
    # A mute and a ban each on a line with who made it.
    fields = [
        ("user", "room"),
        ("role", "joined_at"),
        ("muted_until", "mute_authority"),
        ("is_banned", "ban_authority"),
    ]
    # All but the mute's end, which goes through the service (save_model).
    readonly_fields = [name for line in fields for name in line if name != "muted_until"]
    actions = ["mute_hour", "mute_day", "unmute", "ban", "unban"]

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        if "muted_until" in form.changed_data:
            moderation.member_mute(
                actor=request.user, room=obj.room, user=obj.user, until=obj.muted_until
            )

    def _mute(self, request, memberships, until) -> None:
        run_service(
            self,
            request,
            memberships,
            lambda m, reason: moderation.member_mute(
                actor=request.user, room=m.room, user=m.user, until=until, reason=reason
            ),
            "{count} member(s) muted." if until else "{count} member(s) unmuted.",
        )

    @admin.action(description="Mute for an hour")
    def mute_hour(self, request, memberships) -> None:
        self._mute(request, memberships, timezone.now() + timedelta(hours=1))

    @admin.action(description="Mute for a day")
    def mute_day(self, request, memberships) -> None:
        self._mute(request, memberships, timezone.now() + timedelta(days=1))

    @admin.action(description="Unmute")
    def unmute(self, request, memberships) -> None:
        self._mute(request, memberships, None)

    @admin.action(description="Ban from the room")
    def ban(self, request, memberships) -> None:
        run_service(
            self,
            request,
            memberships,
            lambda m, reason: moderation.member_ban(
                actor=request.user, room=m.room, user=m.user, reason=reason
            ),
            "{count} member(s) banned.",
        )

    @admin.action(description="Unban")
    def unban(self, request, memberships) -> None:
        run_service(
            self,
            request,
            memberships,
            lambda m, reason: moderation.member_unban(
                actor=request.user, room=m.room, user=m.user, reason=reason
            ),
            "{count} member(s) unbanned.",
        )


@admin.register(AuditEntry)
@admin.register(AuditEntry, site=moderation_site)
class AuditEntryAdmin(RoomScopedAdmin):
    """The moderation log: readable and filterable, never editable."""

    list_display = ["created_at", "actor", "action", "room", "target_user", "message", "reason"]
    list_filter = ["action", "created_at", ROOM_FILTER]
    search_fields = ["reason", "actor__username", "target_user__username", "room__slug"]
    list_select_related = ["actor", "room", "target_user", "message__user"]
    date_hierarchy = "created_at"

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(get_user_model(), site=moderation_site)
class MemberLookupAdmin(admin.ModelAdmin):
    """Not a page: lets room moderators pick users by name (autocomplete).

    The site's autocomplete view needs the model registered, with view
    permission; it must not also open the user pages (the account's every
    field, its password hash included) to every moderator: no URLs here.
    """

    search_fields = ["username"]
    ordering = ["username"]  # pages of names, in a stable order

    def get_urls(self) -> list:
        return []

    def has_module_permission(self, request: HttpRequest) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj=None) -> bool:
        return moderation_site.has_permission(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).filter(is_active=True)


# --- accounts (staff only) --------------------------------------------------------------------

User = get_user_model()
admin.site.unregister(User)


@admin.register(User)
class ChatUserAdmin(RefusalsAsMessages, UserAdmin):
    form = AccountChangeForm
    action_form = ReasonActionForm
    actions = ["deactivate", "reactivate"]

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Deleting an account would delete its messages with it, from under
        # every open screen, and blank the audit log's names: deactivate.
        return False

    def save_model(self, request: HttpRequest, obj, form, change: bool) -> None:
        # Deactivation has effects beyond the row (sockets closed, tokens
        # revoked): route it through the service.
        if change and "is_active" in form.changed_data:
            active = obj.is_active
            obj.is_active = not active
            super().save_model(request, obj, form, change)
            moderation.user_set_active(actor=request.user, user=obj, active=active)
        else:
            super().save_model(request, obj, form, change)

    @admin.action(description="Deactivate (close their sockets now)")
    def deactivate(self, request, users) -> None:
        run_service(
            self,
            request,
            users,
            lambda user, reason: moderation.user_set_active(
                actor=request.user, user=user, active=False, reason=reason
            ),
            "{count} account(s) deactivated.",
        )

    @admin.action(description="Reactivate")
    def reactivate(self, request, users) -> None:
        run_service(
            self,
            request,
            users,
            lambda user, reason: moderation.user_set_active(
                actor=request.user, user=user, active=True, reason=reason
            ),
            "{count} account(s) reactivated.",
        )
