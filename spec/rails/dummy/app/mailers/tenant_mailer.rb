# frozen_string_literal: true

class TenantMailer < ActionMailer::Base
  default from: "noreply@example.test"

  def backup_created
    notify("Backup of #{tenant_name} created", "Archive: #{params[:archive_path]}\nRows: #{params[:result][:rows]}")
  end

  def backup_failed
    notify("Backup of #{tenant_name} failed", "#{params[:error_class]}: #{params[:error]}")
  end

  def restore_completed
    result = params[:result]
    kind = result[:dry_run] ? "Dry run" : "Restore"
    notify("#{kind} of #{tenant_name} completed",
           "Archive: #{params[:archive_path]}\nRestored: #{result[:restored].inspect}\nConflicts: #{result[:conflict_count]}")
  end

  def restore_failed
    notify("Restore of #{tenant_name} failed", "#{params[:error_class]}: #{params[:error]}")
  end

  private

  def tenant_name
    tenant = params[:tenant]
    tenant.respond_to?(:name) ? tenant.name : "tenant #{tenant}"
  end

  def notify(subject, body)
    mail(to: params[:user]&.email || "admin@example.test", subject: subject, body: body, content_type: "text/plain")
  end
end
